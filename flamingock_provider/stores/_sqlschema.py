"""Table definitions and engine set-up shared by the SQL audit store and the SQL target system.

Kept apart from `stores.sql` so the target can build its marker table and engines the same way
without importing the store's logic. Imported only when SQL is actually used.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pendulum
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.types import TypeDecorator, TypeEngine

DEFAULT_AUDIT_TABLE = "flamingockAuditLog"
DEFAULT_LOCK_TABLE = "flamingockLock"
DEFAULT_MARKER_TABLE = "flamingockMarker"
READ_ONLY = "flamingock_read_only"
"""Execution option for connections that only read: SQLite then begins without the write lock."""


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC with microseconds in every SQL dialect."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # defensive: SQLite without type affinity
            value = datetime.fromisoformat(value)
        aware: datetime = pendulum.instance(value.replace(tzinfo=timezone.utc), tz="UTC")
        return aware


def _entry_columns() -> list[Column[Any]]:
    """The audit entry's fields as columns (fresh objects: a Column belongs to one table)."""
    return [
        Column("execution_id", String(64), nullable=False),
        Column("stage_id", String(255), nullable=False, default=""),
        Column("change_id", String(255), nullable=False),
        Column("author", String(255), nullable=False, default=""),
        Column("created_at", UtcDateTime(), nullable=False),
        Column("state", String(40), nullable=False),
        Column("type", String(40), nullable=False, default="EXECUTION"),
        Column("invoked_class", String(512), nullable=False, default=""),
        Column("invoked_method", String(128), nullable=False, default=""),
        Column("source_file", String(1024), nullable=False, default=""),
        Column("metadata", Text(), nullable=True),
        Column("execution_millis", BigInteger(), nullable=False, default=0),
        Column("execution_hostname", String(255), nullable=False, default=""),
        Column("error_trace", Text(), nullable=True),
        Column("system_change", Boolean(), nullable=False, default=False),
        Column("tx_strategy", String(40), nullable=False),
        Column("target_system_id", String(255), nullable=False, default=""),
        Column("change_order", String(64), nullable=False, default=""),
        Column("recovery_strategy", String(40), nullable=False),
        Column("transaction_flag", Boolean(), nullable=False, default=False),
    ]


ENTRY_COLUMNS = tuple(c.name for c in _entry_columns())


def audit_table(metadata: MetaData, name: str) -> Table:
    """The append-only history: Flamingock's fields, snake_case."""
    return Table(
        name,
        metadata,
        Column(
            "id",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        *_entry_columns(),
        UniqueConstraint("execution_id", "change_id", "state", name=f"{name}_uq"[:60]),
        Index(f"{name}_change"[:60], "change_id", "created_at"),
    )


def latest_name(audit_name: str) -> str:
    """The latest-entry table's name, derived from the history table's."""
    return f"{audit_name}Latest"


def latest_table(metadata: MetaData, audit_name: str) -> Table:
    """The latest entry of each change, kept beside the history in the same transaction.

    Planning reads this table: its cost grows with the number of changes, not with the
    length of the history. ``priority`` is the state's tie-break rank.
    """
    name = latest_name(audit_name)
    return Table(
        name,
        metadata,
        *_entry_columns(),
        Column("priority", Integer(), nullable=False),
        PrimaryKeyConstraint("change_id", name=f"{name}_pk"[:60]),
    )


def lock_table(metadata: MetaData, name: str) -> Table:
    """One row per lock key."""
    return Table(
        name,
        metadata,
        Column("key", String(255), nullable=False),
        Column("status", String(40), nullable=False),
        Column("owner", String(255), nullable=False),
        Column("expires_at", UtcDateTime(), nullable=False),
        PrimaryKeyConstraint("key", name=f"{name}_pk"[:60]),
    )


def marker_table(metadata: MetaData, name: str) -> Table:
    """In a target database: one row per committed execution of a change, until recorded."""
    return Table(
        name,
        metadata,
        Column("change_id", String(255), nullable=False),
        Column("execution_id", String(64), nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        PrimaryKeyConstraint("change_id", "execution_id", name=f"{name}_pk"[:60]),
    )


def build_engine(url: URL | str, **options: Any) -> Engine:
    """An engine whose transactions are real transactions on every dialect.

    SQLite's Python driver neither begins a transaction before DDL nor takes the write lock
    up front; we emit ``BEGIN IMMEDIATE`` ourselves so a change's DDL rolls back with it and
    concurrent writers wait (busy timeout) instead of failing on a lock upgrade.
    Parameters are hidden from error messages: they may hold user data.
    """
    url = make_url(url)
    options.setdefault("hide_parameters", True)
    if url.get_backend_name() == "sqlite":
        connect_args = dict(options.pop("connect_args", {}))
        connect_args.setdefault("timeout", 30)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=connect_args, **options)
        _sqlite_real_transactions(engine)
        return engine
    # No pool_pre_ping: it would cost a round trip per transaction. A connection the server
    # dropped fails its statement (an AuditStoreError, the run stops) and is replaced.
    return create_engine(url, **options)


def _sqlite_real_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _no_implicit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        conn.exec_driver_sql("BEGIN" if options.get(READ_ONLY) else "BEGIN IMMEDIATE")


def database_identity(url: URL) -> tuple[str, str, int | None, str, str]:
    """What makes two URLs the same database: backend, host, port, database, user."""
    database = url.database or ""
    backend = url.get_backend_name()
    if backend == "sqlite" and database and database != ":memory:":
        import os

        database = os.path.realpath(database)
    default_port = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}.get(backend)
    return (
        "mysql" if backend == "mariadb" else backend,
        (url.host or "").lower(),
        url.port or default_port,
        database,
        url.username or "",
    )
