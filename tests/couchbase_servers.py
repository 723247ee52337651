"""Where the Couchbase tests run: the in-memory fake, or a real cluster named by the environment.

No Couchbase Server can be installed on the test machines (ARCHITECTURE.md §7). Every Couchbase
test runs on `flamingock_provider.testing_couchbase.FakeCouchbaseServer`; when
``FLAMINGOCK_TEST_COUCHBASE_CONNSTR`` is set, the same tests run on that cluster instead:

- ``FLAMINGOCK_TEST_COUCHBASE_CONNSTR``    e.g. ``couchbase://127.0.0.1``
- ``FLAMINGOCK_TEST_COUCHBASE_USERNAME``   default ``Administrator``
- ``FLAMINGOCK_TEST_COUCHBASE_PASSWORD``   default ``password``
- ``FLAMINGOCK_TEST_COUCHBASE_BUCKET``     an existing bucket, default ``flamingock``
- ``FLAMINGOCK_TEST_COUCHBASE_DURABILITY`` default ``majority`` (``none`` on a one-node cluster
  whose bucket has replicas: there a majority cannot be reached)

The user needs Data Reader/Writer and Manage Scopes on the bucket. Each test works in a scope of
its own (``t_<8 hex>``) and drops it at teardown.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from typing import Any

CONNSTR_ENV = "FLAMINGOCK_TEST_COUCHBASE_CONNSTR"
FAKE_BUCKET = "flamingock"
FAKE_TARGET_BUCKET = "catalog"


def real_connstr() -> str | None:
    """The real cluster's connection string, when the environment names one."""
    return os.environ.get(CONNSTR_ENV, "").strip() or None


def unique_scope() -> str:
    """A scope name no other test or run uses."""
    return f"t_{uuid.uuid4().hex[:8]}"


@functools.cache
def _real_settings() -> Any:
    from flamingock_provider.stores._couchbase_cluster import ClusterSettings

    connstr = real_connstr()
    assert connstr is not None
    return ClusterSettings(
        connection_string=connstr,
        username=os.environ.get("FLAMINGOCK_TEST_COUCHBASE_USERNAME", "Administrator"),
        password=os.environ.get("FLAMINGOCK_TEST_COUCHBASE_PASSWORD", "password"),
    )


@functools.cache
def _real_cluster() -> Any:
    """One connection for the whole session (opening one costs about a second)."""
    return _real_settings().open()


class CouchbaseDeployment:
    """A cluster for one test: the fake (a fresh server per test) or the real one.

    :param real: use the real cluster (default: when the environment names one).
    """

    def __init__(self, real: bool | None = None) -> None:
        self.real = real_connstr() is not None if real is None else real
        self.id = "couchbase-real" if self.real else "couchbase-fake"
        self.bucket = (
            os.environ.get("FLAMINGOCK_TEST_COUCHBASE_BUCKET", FAKE_BUCKET)
            if self.real
            else FAKE_BUCKET
        )
        self.durability = (
            os.environ.get("FLAMINGOCK_TEST_COUCHBASE_DURABILITY", "majority")
            if self.real
            else "majority"
        )
        self.server: Any = None
        if not self.real:
            from flamingock_provider.testing_couchbase import FakeCouchbaseServer

            self.server = FakeCouchbaseServer(buckets=[FAKE_BUCKET, FAKE_TARGET_BUCKET])
        self._scopes: list[str] = []
        self._opened: list[Any] = []

    def cluster(self) -> Any:
        """A cluster the caller must not close: a new fake connection, or the session's one."""
        return self.server.connect() if self.server is not None else _real_cluster()

    def connect(self) -> Any:
        """A new connection of its own (closed at teardown): another runner, another process."""
        cluster = self.server.connect() if self.server is not None else _real_settings().open()
        self._opened.append(cluster)
        return cluster

    def new_scope(self) -> str:
        """A scope owned by this test (dropped at teardown); it does not exist yet."""
        name = unique_scope()
        self._scopes.append(name)
        return name

    def create_scope(self, name: str | None = None, collections: tuple[str, ...] = ()) -> str:
        """Create a scope owned by this test, with ``collections``."""
        name = name or self.new_scope()
        if name not in self._scopes:
            self._scopes.append(name)
        manager = self.cluster().bucket(self.bucket).collections()
        manager.create_scope(name)
        for collection in collections:
            manager.create_collection(name, collection)
        return name

    def connection(self, **extras: Any) -> dict[str, Any]:
        """The fields of a ``flamingock_couchbase`` Airflow connection to this cluster."""
        if self.real:
            settings = _real_settings()
            host, login, password = (
                settings.connection_string,
                settings.username,
                settings.password,
            )
        else:
            host, login, password = "couchbase://cb.fake.invalid", "flamingock", "S3cretPW"
        extra = {"bucket": self.bucket, "durability": self.durability, **extras}
        return {
            "conn_type": "flamingock_couchbase",
            "host": host,
            "login": login,
            "password": password,
            "extra": extra,
        }

    def close(self) -> None:
        """Drop the test's scopes (real cluster) and close the connections it opened."""
        try:
            if self.real:
                from couchbase.exceptions import ScopeNotFoundException

                manager = _real_cluster().bucket(self.bucket).collections()
                for name in self._scopes:
                    with contextlib.suppress(ScopeNotFoundException):
                        manager.drop_scope(name)
        finally:
            for cluster in self._opened:
                cluster.close()


def deployment_params() -> list[Any]:
    """``pytest.param``s for a ``deployment`` fixture: the fake, and the real cluster if named."""
    import pytest

    params = [pytest.param(False, id="fake")]
    if real_connstr():
        params.append(pytest.param(True, id="real"))
    return params
