"""SQL stores for the benchmarks: store factory, round-trip counting, raw-driver floor."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import event, insert

from flamingock_provider.engine.model import AuditEntry
from flamingock_provider.stores._sqlupsert import latest_upsert
from flamingock_provider.stores.sql import SqlAuditStore, _row


class Counter:
    def __init__(self) -> None:
        self.count = 0


class SqlBackend:
    """One SQL database; every store it makes lives on tables of its own prefix."""

    def __init__(self, name: str, url: str, kind: str) -> None:
        self.name = name
        self.url = url
        self.kind = kind
        self._stores: list[SqlAuditStore] = []

    def store(self, prefix: str | None = None) -> SqlAuditStore:
        prefix = prefix or f"b{uuid.uuid4().hex[:8]}_"
        store = SqlAuditStore(self.url, audit_table=f"{prefix}audit", lock_table=f"{prefix}lock")
        self._stores.append(store)
        return store

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
        for store in self._stores:
            try:
                for table in store._tables:
                    table.drop(store.engine, checkfirst=True)
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
