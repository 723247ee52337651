"""The MongoDB servers the tests use: mongomock-ng in process, or a real one when configured.

No ``mongod`` can be installed on the test machines (ARCHITECTURE.md §7). Every MongoDB test runs
on `FakeCluster`, an in-process mongomock-ng deployment, and — the same test, another
parameter — on the server at ``FLAMINGOCK_TEST_MONGODB_URI`` when that variable is set (a
replica set: transactions need one; ``mongodb://127.0.0.1:27017/?replicaSet=rs0``).

A `FakeCluster` answers ``hello`` as a replica set member (``setName``), or as a standalone server
with ``replica_set=None``; its clients share its data, and closing one keeps the data (plain
mongomock-ng clients forget the server's data on ``close``). `FakeMongo` stands in for
``pymongo.MongoClient`` when tests build clients from Airflow connections.

What mongomock-ng cannot prove, and only the real server shows: isolation (writes inside a
transaction are visible to other readers before commit), atomicity of an upsert against the
unique index under concurrent writers, ``$$NOW`` (the server-clock lock), index use, and
anything across processes.
"""

from __future__ import annotations

import functools
import os
import uuid
from typing import Any

import pytest

URI_ENV = "FLAMINGOCK_TEST_MONGODB_URI"
REAL_DATABASE_PREFIX = "flamingock_test_"


def real_uri() -> str | None:
    """The real server's connection string, or None when the tests run on mongomock-ng only."""
    return os.environ.get(URI_ENV, "").strip() or None


def backend_ids() -> list[str]:
    """``mongodb`` (mongomock-ng) always, ``mongodb-real`` when the variable is set."""
    return ["mongodb", "mongodb-real"] if real_uri() else ["mongodb"]


def unique_database() -> str:
    """A database name no other test or run uses (dropped by the test that made it)."""
    return f"{REAL_DATABASE_PREFIX}{uuid.uuid4().hex[:8]}"


@functools.cache
def _fake_classes() -> tuple[type, type]:
    import mongomock_ng
    from mongomock_ng.database import Database

    class FakeDatabase(Database):  # type: ignore[misc]
        def command(self, command: Any, value: Any = 1, **kwargs: Any) -> Any:
            name = command if isinstance(command, str) else next(iter(command))
            if name in ("hello", "isMaster", "ismaster"):
                return self.client.cluster.hello()
            return super().command(command, value, **kwargs)

        def get_collection(self, name: str, **options: Any) -> Any:
            collection = super().get_collection(name, **options)
            if getattr(collection.aggregate, "_flamingock_wrapped", False):
                return collection  # mongomock-ng hands out the same object: wrap it once only
            aggregate = collection.aggregate

            def without_batch_size(pipeline: Any, session: Any = None, **kwargs: Any) -> Any:
                kwargs.pop("batchSize", None)  # one batch anyway; mongomock-ng warns otherwise
                return aggregate(pipeline, session=session, **kwargs)

            without_batch_size._flamingock_wrapped = True  # type: ignore[attr-defined]
            collection.aggregate = without_batch_size
            return collection

    class FakeClient(mongomock_ng.MongoClient):  # type: ignore[misc]
        def __init__(self, cluster: FakeCluster) -> None:
            super().__init__(cluster.address, tz_aware=True, _store=cluster.server)
            self.__dict__["cluster"] = cluster

        def close(self) -> None:
            self._closed = True  # the cluster's data outlives its clients, as on a server

        def get_database(self, name: str | None = None, **options: Any) -> Any:
            self._check_closed()
            db = self._database_accesses.get(name)
            if db is None:
                db = self._database_accesses[name] = FakeDatabase(
                    self,
                    name,
                    _store=self._store[name],
                    read_preference=options.get("read_preference") or self.read_preference,
                    codec_options=options.get("codec_options") or self._codec_options,
                    read_concern=options.get("read_concern"),
                )
            return db

    return FakeDatabase, FakeClient


class FakeCluster:
    """One in-process MongoDB deployment (mongomock-ng) at ``host:port``.

    :param replica_set: the set name ``hello`` reports; None makes it a standalone server.
    """

    def __init__(
        self, host: str = "mongo-a.test", port: int = 27017, replica_set: str | None = "rs0"
    ):
        from mongomock_ng.store import ServerStore

        self.host = host.lower()
        self.port = port
        self.replica_set = replica_set
        self.server = ServerStore()
        self.clients: list[Any] = []

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def hello(self) -> dict[str, Any]:
        reply: dict[str, Any] = {"isWritablePrimary": True, "ismaster": True, "ok": 1.0}
        if self.replica_set:
            reply.update(setName=self.replica_set, logicalSessionTimeoutMinutes=30)
        return reply

    def client(self) -> Any:
        """A new client on this deployment's data."""
        client = _fake_classes()[1](self)
        self.clients.append(client)
        return client


class FakeMongo:
    """Stands in for ``pymongo.MongoClient``: a client on the `FakeCluster` its URI names.

    ``calls`` records each (parsed URI, keyword options), so tests see what the hook sent.
    """

    def __init__(self) -> None:
        self.clusters: dict[str, FakeCluster] = {}
        self.calls: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def add(self, host: str = "mongo-a.test", port: int = 27017, **options: Any) -> FakeCluster:
        cluster = FakeCluster(host, port, **options)
        self.clusters[cluster.address] = cluster
        return cluster

    def __call__(self, uri: str, **kwargs: Any) -> Any:
        from pymongo.errors import ServerSelectionTimeoutError
        from pymongo.uri_parser import parse_uri

        parsed = parse_uri(uri)
        self.calls.append((parsed, kwargs))
        host, port = parsed["nodelist"][0]
        cluster = self.clusters.get(f"{host}:{port}")
        if cluster is None:
            raise ServerSelectionTimeoutError(f"{host}:{port}: [Errno 111] Connection refused")
        return cluster.client()


def patch_pymongo(monkeypatch: pytest.MonkeyPatch) -> FakeMongo:
    """Replace ``pymongo.MongoClient`` by a `FakeMongo` for one test; return it."""
    import pymongo

    fake = FakeMongo()
    monkeypatch.setattr(pymongo, "MongoClient", fake)
    return fake


def real_client() -> Any:
    """A pymongo client on the real server (the test closes it)."""
    import pymongo

    uri = real_uri()
    assert uri is not None, f"{URI_ENV} is not set"
    return pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)


def connection_fields(uri: str, database: str) -> dict[str, Any]:
    """The Airflow connection fields (JSON form) that reach the server of ``uri``."""
    from pymongo.uri_parser import parse_uri

    parsed = parse_uri(uri)
    options = {k: v for k, v in parsed["options"].items() if k.lower() not in ("authsource",)}
    extra: dict[str, Any] = {"srv": uri.startswith("mongodb+srv://")}
    if options:
        extra["options"] = {
            k: v if isinstance(v, (str, int, bool)) else str(v) for k, v in options.items()
        }
    if parsed["options"].get("authsource"):
        extra["auth_source"] = parsed["options"]["authsource"]
    hosts = ",".join(f"{h}:{p}" for h, p in parsed["nodelist"])
    if extra["srv"]:
        hosts = uri.split("@")[-1].split("/")[0].split("?")[0]
    return {
        "conn_type": "flamingock_mongodb",
        "host": hosts,
        "login": parsed["username"],
        "password": parsed["password"],
        "schema": database,
        "extra": extra,
    }
