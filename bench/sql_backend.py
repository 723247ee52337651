"""SQL stores for the benchmarks: store factory, round-trip counting, raw-driver floor."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from backends import REPO, Backend, Counter, new_prefix
from sqlalchemy import event, insert

from flamingock_provider.engine.model import AuditEntry
from flamingock_provider.stores._sqlupsert import latest_upsert
from flamingock_provider.stores.sql import SqlAuditStore, _row

SERVERS = (
    ("PostgreSQL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    ("MariaDB", "mysql+pymysql://root@127.0.0.1:3306/test"),
)


def available() -> Iterator[SqlBackend]:
    """SQLite (a file under .cache/), then each SQL server that answers on loopback."""
    from sqlalchemy import create_engine, text

    sqlite = REPO / ".cache" / "bench-audit.db"
    sqlite.parent.mkdir(exist_ok=True)
    sqlite.unlink(missing_ok=True)
    yield SqlBackend("SQLite", f"sqlite:///{sqlite}", "embedded")
    for name, url in SERVERS:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as err:
            print(f"{name}: not reachable, left out ({type(err).__name__})", flush=True)
            continue
        finally:
            engine.dispose()
        yield SqlBackend(name, url, "server")


def store_for(spec: dict[str, Any], prefix: str) -> SqlAuditStore:
    return SqlAuditStore(spec["url"], audit_table=f"{prefix}audit", lock_table=f"{prefix}lock")


class SqlBackend(Backend):
    """One SQL database; every store it makes lives on tables of its own prefix."""

    shared = True
    floor_text = (
        "the history insert and the latest-entry upsert in one transaction per entry, with the "
        "DBAPI driver, statements compiled once"
    )
    counting = (
        "statements plus commits, counted with SQLAlchemy's `before_cursor_execute` and "
        "`commit` events (the floor counts its own driver calls the same way); on "
        "MySQL/MariaDB each read also ends with a ROLLBACK when its connection returns to the "
        "pool, which is not counted"
    )

    def __init__(self, name: str, url: str, kind: str) -> None:
        self.name = name
        self.url = url
        self.kind = kind
        self._stores: list[SqlAuditStore] = []

    def spec(self) -> dict[str, Any]:
        return {"type": "sql", "url": self.url}

    def store(self, prefix: str | None = None) -> SqlAuditStore:
        store = store_for(self.spec(), prefix or new_prefix())
        self._stores.append(store)
        return store

    def prefix_of(self, store: SqlAuditStore) -> str:
        return store.audit_table_name[: -len("audit")]

    def add_history(self, store: SqlAuditStore, entries: Sequence[AuditEntry]) -> None:
        rows = [_row(e) for e in entries]
        with store.engine.begin() as conn:
            for start in range(0, len(rows), 5000):
                conn.execute(insert(store.audit), rows[start : start + 5000])

    @contextmanager
    def round_trips(self, store: SqlAuditStore) -> Iterator[Counter]:
        """Count statements and commits (SQLAlchemy events; pool-return resets not counted)."""
        counter = Counter()

        def one(*_: Any) -> None:
            counter.count += 1

        hooks = [("before_cursor_execute", one), ("commit", one)]
        for name, fn in hooks:
            event.listen(store.engine, name, fn)
        try:
            yield counter
        finally:
            for name, fn in hooks:
                event.remove(store.engine, name, fn)

    def floor(self, entries: Sequence[AuditEntry]) -> tuple[float, int]:
        """The same audit writes issued directly with the DBAPI driver: (seconds, round trips).

        Per entry, as the store does: one transaction with the history insert and the
        latest-entry upsert, statements compiled once up front.
        """
        store = self.store()
        store.initialize()
        dialect = store.engine.dialect
        sample = {**_row(entries[0]), "priority": entries[0].state.priority}
        history = insert(store.audit).compile(dialect=dialect, column_keys=list(_row(entries[0])))
        latest = latest_upsert(store.dialect, store.latest).compile(
            dialect=dialect, column_keys=list(sample)
        )
        params = [
            (_driver(history, _row(e)), _driver(latest, {**_row(e), "priority": e.state.priority}))
            for e in entries
        ]
        raw = store.engine.raw_connection()
        sqlite = store.dialect == "sqlite"
        trips = 0
        try:
            cursor = raw.cursor()
            started = time.perf_counter()
            for history_params, latest_params in params:
                if sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                    trips += 1
                cursor.execute(str(history), history_params)
                cursor.execute(str(latest), latest_params)
                raw.commit()
                trips += 3
            elapsed = time.perf_counter() - started
        finally:
            raw.close()
        return elapsed, trips

    def close(self) -> None:
        """Drop every store's tables (one failure does not keep the others)."""
        for store in self._stores:
            try:
                for table in store._tables:
                    table.drop(store.engine, checkfirst=True)
            except Exception as err:
                print(f"{self.name}: could not drop {store.audit_table_name}: {err}", flush=True)
            finally:
                store.close()
        self._stores.clear()


def _driver(compiled: Any, row: dict[str, Any]) -> Any:
    """Bind parameters as the driver takes them (naive UTC times, positional if qmark)."""
    values = dict(compiled.construct_params(row))
    for key, value in values.items():
        if isinstance(value, datetime):  # naive UTC, a plain datetime (the drivers' type)
            utc = value.astimezone(timezone.utc)
            values[key] = datetime(*utc.timetuple()[:6], utc.microsecond)
    if compiled.positiontup:
        return tuple(values[k] for k in compiled.positiontup)
    return values
