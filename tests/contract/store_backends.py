"""The audit store backends of the contract suite: one class and one `BACKENDS` entry each.

A backend is opened for one test and builds stores on that test's own tables (prefix
``t_<uuid8>_``); every store it builds shares those tables, so several stores can contend for one
lock. `Backend.close` closes every store and drops every table carrying the prefix (also the
marker and target tables the test's changes created), so no run's leftovers touch another.

Adding a store (DynamoDB, MongoDB, Couchbase) means one `Backend` subclass and one entry here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:  # tests/ holds `servers`, shared with the other suites
    sys.path.insert(0, _TESTS)

import mongodb_servers  # noqa: E402
import servers  # noqa: E402

from flamingock_provider.engine.store import AuditStore  # noqa: E402
from flamingock_provider.stores.memory import MemoryAuditStore  # noqa: E402
from flamingock_provider.stores.sql import SqlAuditStore  # noqa: E402


class Backend:
    """One audit store kind, opened for one test: builds stores on the test's own tables."""

    id: str

    def __call__(self, **options: Any) -> AuditStore:
        """A store on this test's tables; every call shares the same tables."""
        raise NotImplementedError

    def close(self) -> None:
        """Close every store built and remove everything the test created."""


class MemoryBackend(Backend):
    """The in-memory store: "the same tables" is the same instance."""

    id = "memory"

    def __init__(self, tmp_path: Path) -> None:
        self._store = MemoryAuditStore(name=f"contract-{tmp_path.name}")

    def __call__(self, **options: Any) -> MemoryAuditStore:
        return self._store


class SqlBackend(Backend):
    """A SQL database; tables ``<prefix>audit`` and ``<prefix>lock`` unless told otherwise."""

    def __init__(self, id: str, url: str, tmp_path: Path) -> None:
        self.id = id
        self.url = url
        self.tmp_path = tmp_path
        self.prefix = servers.unique_prefix()
        self.audit_table = self.name("audit")
        self.lock_table = self.name("lock")
        self._stores: list[SqlAuditStore] = []
        self._engines: list[Any] = []

    def name(self, suffix: str) -> str:
        """A table name owned by this test (dropped at teardown)."""
        return f"{self.prefix}{suffix}"

    def __call__(self, **options: Any) -> SqlAuditStore:
        options.setdefault("audit_table", self.audit_table)
        options.setdefault("lock_table", self.lock_table)
        url = options.pop("url", self.url)
        store = SqlAuditStore(url, **options)
        self._stores.append(store)
        return store

    def engine(self, url: str | None = None) -> Any:
        """A plain SQLAlchemy engine on ``url`` (default: the audit database), for raw SQL."""
        from sqlalchemy import create_engine

        engine = create_engine(url or self.url)
        self._engines.append(engine)
        return engine

    def other_database_url(self, name: str = "target") -> str:
        """A database other than the audit store's: a SQLite file of this test."""
        return servers.sqlite_url(self.tmp_path / f"{name}.db")

    def close(self) -> None:
        try:
            for store in self._stores:
                store.close()
            for engine in self._engines:
                engine.dispose()
        finally:
            if not self.url.startswith("sqlite"):
                servers.drop_tables_with_prefix(self.url, self.prefix)


class DynamoDBBackend(Backend):
    """DynamoDB Local (`dynamodb_local`); tables ``<prefix>audit`` and ``<prefix>lock``."""

    id = "dynamodb"

    def __init__(self, tmp_path: Path) -> None:
        import dynamodb_local

        self.local = dynamodb_local.require()
        self.prefix = servers.unique_prefix()
        self.audit_table = self.name("audit")
        self.lock_table = self.name("lock")
        self._stores: list[Any] = []

    def name(self, suffix: str) -> str:
        """A table name owned by this test (deleted at teardown)."""
        return f"{self.prefix}{suffix}"

    def __call__(self, **options: Any) -> AuditStore:
        from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

        options.setdefault("audit_table", self.audit_table)
        options.setdefault("lock_table", self.lock_table)
        store = DynamoDBAuditStore(**self.local.options(**options))
        self._stores.append(store)
        return store

    def close(self) -> None:
        try:
            for store in self._stores:
                store.close()
        finally:
            self.local.delete_tables(self.prefix)


class MongoBackend(Backend):
    """MongoDB: mongomock-ng in process (``mongodb``), or the server at
    ``FLAMINGOCK_TEST_MONGODB_URI`` (``mongodb-real``, in a database of the test's own that is
    dropped at teardown); collections ``<prefix>audit`` and ``<prefix>lock``.
    """

    def __init__(self, id: str, tmp_path: Path) -> None:
        self.id = id
        self.real = id == "mongodb-real"
        self.prefix = servers.unique_prefix()
        self.audit_collection = self.name("audit")
        self.lock_collection = self.name("lock")
        self.database = mongodb_servers.unique_database() if self.real else "flamingock"
        self.cluster = None if self.real else mongodb_servers.FakeCluster()
        self.client = self.new_client()
        self._stores: list[Any] = []

    def name(self, suffix: str) -> str:
        """A collection name owned by this test."""
        return f"{self.prefix}{suffix}"

    def new_client(self) -> Any:
        """Another client on the same deployment (the caller closes it)."""
        return self.cluster.client() if self.cluster else mongodb_servers.real_client()

    def __call__(self, **options: Any) -> AuditStore:
        from flamingock_provider.stores.mongodb import MongoAuditStore

        options.setdefault("audit_collection", self.audit_collection)
        options.setdefault("lock_collection", self.lock_collection)
        client = options.pop("client", self.client)
        store = MongoAuditStore(client, options.pop("database", self.database), **options)
        self._stores.append(store)
        return store

    def close(self) -> None:
        try:
            for store in self._stores:
                store.close()
        finally:
            if self.real:
                self.client.drop_database(self.database)
            self.client.close()


class CouchbaseBackend(Backend):
    """Couchbase: the in-memory SDK fake, or the cluster at ``FLAMINGOCK_TEST_COUCHBASE_CONNSTR``
    (`couchbase_servers`); collections in a scope of the test's own, dropped at teardown.
    """

    id = "couchbase"

    def __init__(self, tmp_path: Path) -> None:
        import couchbase_servers

        self.deployment = couchbase_servers.CouchbaseDeployment()
        self.scope = self.deployment.new_scope()
        self._stores: list[Any] = []

    def __call__(self, **options: Any) -> AuditStore:
        from flamingock_provider.stores.couchbase import CouchbaseAuditStore

        options.setdefault("bucket", self.deployment.bucket)
        options.setdefault("scope", self.scope)
        options.setdefault("durability", self.deployment.durability)
        cluster = options.pop("cluster", None) or self.deployment.cluster()
        store = CouchbaseAuditStore(cluster, **options)
        self._stores.append(store)
        return store

    def close(self) -> None:
        try:
            for store in self._stores:
                store.close()
        finally:
            self.deployment.close()


def _mongodb(tmp_path: Path) -> Backend:
    return MongoBackend("mongodb", tmp_path)


def _mongodb_real(tmp_path: Path) -> Backend:
    return MongoBackend("mongodb-real", tmp_path)


def _sqlite(tmp_path: Path) -> Backend:
    return SqlBackend("sqlite", servers.sqlite_url(tmp_path / "audit.db"), tmp_path)


def _postgresql(tmp_path: Path) -> Backend:
    return SqlBackend("postgresql", servers.require_postgresql(), tmp_path)


def _mariadb(tmp_path: Path) -> Backend:
    return SqlBackend("mariadb", servers.require_mariadb(), tmp_path)


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "memory": MemoryBackend,
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "mariadb": _mariadb,
    "dynamodb": DynamoDBBackend,
    "mongodb": _mongodb,
    "couchbase": CouchbaseBackend,
    **({"mongodb-real": _mongodb_real} if mongodb_servers.real_uri() else {}),
}
SQL_BACKENDS = ("sqlite", "postgresql", "mariadb")
ON_A_SERVER = frozenset({"postgresql", "mariadb", "dynamodb", "mongodb-real"})
