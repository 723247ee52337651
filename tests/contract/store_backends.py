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
}
SQL_BACKENDS = ("sqlite", "postgresql", "mariadb")
ON_A_SERVER = frozenset({"postgresql", "mariadb"})
