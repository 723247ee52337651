"""The SQL audit store (SQLAlchemy Core): SQLite, PostgreSQL, MySQL/MariaDB.

Lock writes are single checked statements where the dialect allows: ``INSERT .. ON CONFLICT ..
DO UPDATE .. WHERE`` on SQLite and PostgreSQL. MySQL/MariaDB have no conditional upsert whose
row count can be trusted, so acquire reads the row under ``SELECT .. FOR UPDATE`` and writes in
the same transaction. Expiry is decided by the runner's clock (times are passed in).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    delete,
    func,
    insert,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from flamingock_provider.engine.errors import AuditStoreError
from flamingock_provider.engine.model import (
    AuditEntry,
    AuditState,
    LockRecord,
    Recovery,
    TxStrategy,
    latest_entries,
)
from flamingock_provider.stores._sqlschema import (
    DEFAULT_AUDIT_TABLE,
    DEFAULT_LOCK_TABLE,
    ENTRY_COLUMNS,
    READ_ONLY,
    build_engine,
    database_identity,
    latest_table,
)
from flamingock_provider.stores._sqlschema import audit_table as audit_table_def
from flamingock_provider.stores._sqlschema import lock_table as lock_table_def
from flamingock_provider.stores._sqlupsert import latest_upsert, lock_upsert

T = TypeVar("T")

_MYSQL_RETRYABLE = {1205, 1213}  # lock wait timeout, deadlock: another acquirer won this round


class SqlAuditStore:
    """`AuditStore` on a SQL database.

    :param url: a SQLAlchemy URL (``sqlite:////abs/path.db``, ``postgresql+psycopg://..``,
        ``mysql+pymysql://..``).
    :param audit_table: history table name.
    :param lock_table: lock table name.
    :param auto_create: create missing tables; when false, validate and fail clearly instead.
    :param engine_options: extra keyword arguments for ``create_engine``.
    """

    def __init__(
        self,
        url: URL | str,
        *,
        audit_table: str = DEFAULT_AUDIT_TABLE,
        lock_table: str = DEFAULT_LOCK_TABLE,
        auto_create: bool = True,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = make_url(url)
        self.audit_table_name = audit_table
        self.lock_table_name = lock_table
        self.auto_create = auto_create
        self._engine_options = dict(engine_options or {})
        self._metadata = MetaData()
        self.audit: Table = audit_table_def(self._metadata, audit_table)
        self.lock: Table = lock_table_def(self._metadata, lock_table)
        self.latest: Table = latest_table(self._metadata, audit_table)
        self._tables = (self.audit, self.latest, self.lock)
        # Built once: rows go in as parameters, so SQLAlchemy compiles each statement once.
        # preserve_rowcount: SQLAlchemy reports INSERT row counts only when asked to.
        self._history_insert = insert(self.audit).execution_options(preserve_rowcount=True)
        self._latest_upsert = latest_upsert(self.dialect, self.latest)
        self._ready = False

    # -- identity -------------------------------------------------------------------------

    @property
    def description(self) -> str:
        safe = self.url.render_as_string(hide_password=True)
        return f"SQL audit store {safe} (tables {self.audit_table_name}, {self.lock_table_name})"

    @cached_property
    def engine(self) -> Engine:
        try:
            return build_engine(self.url, **self._engine_options)
        except ImportError as err:
            extra = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}.get(
                self.dialect, "all"
            )
            raise AuditStoreError(
                f"{self.description}: the driver for '{self.url.drivername}' is not installed "
                f"({err}); install it, e.g. pip install 'airflow-provider-flamingock[{extra}]'",
                store=self.description,
                operation="connect",
            ) from err

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    def same_database(self, url: URL | str) -> bool:
        """Whether ``url`` points at this store's database (so they can share a transaction)."""
        return database_identity(make_url(url)) == database_identity(self.url)

    # -- tables ---------------------------------------------------------------------------

    def initialize(self) -> None:
        """Make sure the three tables exist with our columns: one query when they do."""
        if self._ready:
            return
        if self._schema_matches():
            self._ready = True
            return
        self._validate(allow_missing=self.auto_create)  # refuse a foreign table before creating
        if self.auto_create:
            for attempt in range(1, 4):
                try:
                    self._metadata.create_all(self.engine, checkfirst=True)
                    break
                except SQLAlchemyError as err:
                    # Another runner may be creating the same tables (on MySQL/MariaDB one
                    # statement at a time): look again and create only what is still missing.
                    if attempt == 3:
                        raise self._error("create tables", err) from err
                    time.sleep(0.2 * attempt)
        self._validate()
        self._backfill_latest()
        self._ready = True

    def _backfill_latest(self) -> None:
        """Fill an empty latest-entry table from the history (a store made before it existed).

        Runs only on the slow path of `initialize` (some table was missing); idempotent, as
        the upsert keeps whichever entry ranks later.
        """
        count = select(func.count()).select_from(self.latest)
        with self._reading() as conn:
            if conn.execute(count).scalar():
                return
        history = self.read_history()
        if not history:
            return
        rows = [{**_row(e), "priority": e.state.priority} for e in latest_entries(history).values()]

        def fill(conn: Connection) -> None:
            for row in rows:
                conn.execute(self._latest_upsert, row)

        self._guard("backfill latest", lambda: self._in_transaction(fill))

    def _schema_matches(self) -> bool:
        """Select every expected column of every table, no rows: fails if anything is missing.

        The common case (tables in place) then costs one round trip; on failure the inspector
        runs to name what is missing.
        """
        columns = [c for t in self._tables for c in t.columns]
        audit, latest, lock = self._tables
        # The join conditions only keep SQLAlchemy's cartesian-product linter quiet: no rows.
        joined = audit.join(latest, latest.c.change_id == audit.c.change_id).join(
            lock, lock.c["key"] == audit.c.change_id
        )
        probe = select(*columns).select_from(joined).where(literal(False))
        try:
            with self._reading() as conn:
                conn.execute(probe).all()
        except SQLAlchemyError:
            return False
        return True

    def is_initialized(self) -> bool:
        names = self._guard("inspect", lambda: set(inspect(self.engine).get_table_names()))
        return {t.name for t in self._tables} <= names

    def _validate(self, allow_missing: bool = False) -> None:
        """Check every table has our columns; a missing table is an error unless allowed."""

        def columns() -> dict[str, set[str]]:
            inspector = inspect(self.engine)
            found = set(inspector.get_table_names())
            return {
                t.name: {c["name"] for c in inspector.get_columns(t.name)}
                for t in self._tables
                if t.name in found
            }

        present = self._guard("inspect", columns)
        for table in self._tables:
            if table.name not in present:
                if allow_missing:
                    continue
                raise AuditStoreError(
                    f"{self.description}: table '{table.name}' does not exist and auto_create "
                    "is off. Create it (see docs/audit-stores/sql.md) or set auto_create=true.",
                    store=self.description,
                    operation="validate",
                )
            missing = sorted({c.name for c in table.columns} - present[table.name])
            if missing:
                raise AuditStoreError(
                    f"{self.description}: table '{table.name}' lacks column(s) "
                    f"{', '.join(missing)}; it was not created by flamingock_provider. "
                    f"Expected columns: {', '.join(c.name for c in table.columns)}.",
                    store=self.description,
                    operation="validate",
                )

    # -- history --------------------------------------------------------------------------

    def read_latest(self) -> Mapping[str, AuditEntry]:
        """One query on the latest-entry table: cost follows the number of changes."""
        query = select(*[self.latest.c[name] for name in ENTRY_COLUMNS])

        def run() -> dict[str, AuditEntry]:
            with self._reading() as conn:
                rows = conn.execute(query).mappings().all()
            return {row["change_id"]: self._entry(row) for row in rows}

        return self._guard("read_latest", run)

    def read_history(self, since: datetime | None = None) -> list[AuditEntry]:
        a = self.audit
        query = select(*[a.c[name] for name in ENTRY_COLUMNS]).order_by(a.c.created_at, a.c.id)
        if since is not None:
            query = query.where(a.c.created_at >= since)

        def run() -> list[AuditEntry]:
            with self._reading() as conn:
                return [self._entry(row) for row in conn.execute(query).mappings()]

        return self._guard("read_history", run)

    def append(self, entry: AuditEntry, transaction: object | None = None) -> None:
        """Insert into the history and, in the same transaction, refresh the latest entry."""
        row = _row(entry)
        latest_row = {**row, "priority": entry.state.priority}

        def write(conn: Connection) -> None:
            if conn.execute(self._history_insert, row).rowcount != 1:
                raise AuditStoreError(
                    f"{self.description}: audit insert for '{entry.change_id}' wrote no row",
                    store=self.description,
                    operation="append",
                )
            # No row changes when an entry ranking later is already there: that is fine.
            conn.execute(self._latest_upsert, latest_row)

        if transaction is not None:
            if not isinstance(transaction, Connection) or not self.same_database(
                transaction.engine.url
            ):
                raise AuditStoreError(
                    f"{self.description}: a shared transaction must be a connection to the "
                    "audit store's own database",
                    store=self.description,
                    operation="append",
                )
            self._guard("append", lambda: write(transaction))
            return
        self._guard("append", lambda: self._in_transaction(write))

    # -- lock -----------------------------------------------------------------------------

    def lock_acquire(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        if self.dialect in ("mysql", "mariadb"):
            return self._acquire_under_row_lock(key, owner, now, expires_at)
        values = {"key": key, "status": "LOCK_HELD", "owner": owner, "expires_at": expires_at}
        upsert = lock_upsert(self.dialect, self.lock, values, now).execution_options(
            preserve_rowcount=True
        )
        return self._guard(
            "lock_acquire", lambda: self._in_transaction(lambda c: c.execute(upsert).rowcount == 1)
        )

    def _acquire_under_row_lock(
        self, key: str, owner: str, now: datetime, expires_at: datetime
    ) -> bool:
        lk = self.lock
        values = {"key": key, "status": "LOCK_HELD", "owner": owner, "expires_at": expires_at}

        def attempt(conn: Connection) -> bool:
            row = conn.execute(
                select(lk.c.owner, lk.c.expires_at).where(lk.c["key"] == key).with_for_update()
            ).first()
            if row is None:
                created = insert(lk).values(**values).execution_options(preserve_rowcount=True)
                return conn.execute(created).rowcount == 1
            if row.expires_at <= now or row.owner == owner:
                changed = update(lk).where(lk.c["key"] == key).values(**values)
                return conn.execute(changed).rowcount == 1
            return False

        try:
            return self._in_transaction(attempt)
        except IntegrityError:
            return False  # a concurrent runner inserted the row first
        except DBAPIError as err:
            code = err.orig.args[0] if err.orig is not None and err.orig.args else None
            if code in _MYSQL_RETRYABLE:
                return False
            raise self._error("lock_acquire", err) from err

    def lock_extend(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        lk = self.lock
        statement = (
            update(lk).where(lk.c["key"] == key, lk.c.owner == owner).values(expires_at=expires_at)
        )
        return self._guard(
            "lock_extend",
            lambda: self._in_transaction(lambda c: c.execute(statement).rowcount == 1),
        )

    def lock_release(self, key: str, owner: str) -> None:
        lk = self.lock
        statement = delete(lk).where(lk.c["key"] == key, lk.c.owner == owner)
        self._guard("lock_release", lambda: self._in_transaction(lambda c: c.execute(statement)))

    def lock_holder(self, key: str) -> LockRecord | None:
        lk = self.lock
        query = select(lk.c.owner, lk.c.expires_at, lk.c.status).where(lk.c["key"] == key)

        def run() -> LockRecord | None:
            with self._reading() as conn:
                row = conn.execute(query).first()
            return None if row is None else LockRecord(key, row.owner, row.expires_at, row.status)

        return self._guard("lock_holder", run)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
            del self.__dict__["engine"]

    # -- helpers --------------------------------------------------------------------------

    def _reading(self) -> Connection:
        """A connection for single-statement reads.

        PostgreSQL and SQLite read in autocommit: no BEGIN/ROLLBACK around the one SELECT, so a
        read is one round trip, and on SQLite it takes no write lock. MySQL/MariaDB keep an
        implicit transaction: switching pymysql to autocommit would cost two extra round trips.
        """
        conn = self.engine.connect()
        if self.dialect in ("mysql", "mariadb"):
            return conn
        return conn.execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY: True})

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return work(conn)

    def _guard(self, operation: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except AuditStoreError:
            raise
        except SQLAlchemyError as err:
            raise self._error(operation, err) from err

    def _error(self, operation: str, err: BaseException) -> AuditStoreError:
        detail = str(getattr(err, "orig", None) or err).strip().splitlines()[0][:300]
        password = self.url.password
        if password:
            detail = detail.replace(str(password), "***")
        return AuditStoreError(
            f"{self.description}: {operation} failed: {type(err).__name__}: {detail}",
            store=self.description,
            operation=operation,
        )

    def _entry(self, row: RowMapping) -> AuditEntry:
        try:
            return AuditEntry(
                execution_id=row["execution_id"],
                change_id=row["change_id"],
                state=AuditState(row["state"]),
                created_at=row["created_at"],
                stage_id=row["stage_id"],
                author=row["author"],
                type=row["type"],
                invoked_class=row["invoked_class"],
                invoked_method=row["invoked_method"],
                source_file=row["source_file"],
                metadata=json.loads(row["metadata"]) if row["metadata"] else {},
                execution_millis=int(row["execution_millis"]),
                execution_hostname=row["execution_hostname"],
                error_trace=row["error_trace"],
                system_change=bool(row["system_change"]),
                tx_strategy=TxStrategy(row["tx_strategy"]),
                target_system_id=row["target_system_id"],
                change_order=row["change_order"],
                recovery_strategy=Recovery(row["recovery_strategy"]),
                transaction_flag=bool(row["transaction_flag"]),
            )
        except (ValueError, KeyError) as err:
            raise AuditStoreError(
                f"{self.description}: audit record of change '{row.get('change_id')}' "
                f"(execution {row.get('execution_id')}) is unreadable: {err}. It was not "
                "written by flamingock_provider; fix or remove it.",
                store=self.description,
                operation="read",
            ) from err


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "execution_id": entry.execution_id,
        "stage_id": entry.stage_id,
        "change_id": entry.change_id,
        "author": entry.author,
        "created_at": entry.created_at,
        "state": entry.state.value,
        "type": entry.type,
        "invoked_class": entry.invoked_class,
        "invoked_method": entry.invoked_method,
        "source_file": entry.source_file,
        "metadata": json.dumps(dict(entry.metadata), default=str) if entry.metadata else None,
        "execution_millis": entry.execution_millis,
        "execution_hostname": entry.execution_hostname,
        "error_trace": entry.error_trace,
        "system_change": entry.system_change,
        "tx_strategy": entry.tx_strategy.value,
        "target_system_id": entry.target_system_id,
        "change_order": entry.change_order,
        "recovery_strategy": entry.recovery_strategy.value,
        "transaction_flag": entry.transaction_flag,
    }
