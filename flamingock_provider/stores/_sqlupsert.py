"""Conditional upserts, per dialect: the statements whose semantics the SQL store relies on.

SQLite and PostgreSQL have ``INSERT .. ON CONFLICT .. DO UPDATE .. WHERE``; MySQL/MariaDB have
``ON DUPLICATE KEY UPDATE`` without a WHERE, so the condition goes into each assignment
(evaluated left to right there: the columns the condition reads are assigned last).
"""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, or_
from sqlalchemy.sql.dml import Insert


def _insert(dialect: str, table: Table) -> Any:
    name = "mysql" if dialect == "mariadb" else dialect
    return importlib.import_module(f"sqlalchemy.dialects.{name}").insert(table)


def latest_upsert(dialect: str, table: Table) -> Insert:
    """Insert a change's latest entry, or replace it when the new row ranks later.

    "Later" is the history's tie-break: newer ``created_at``, then higher ``priority``.
    The row comes as execution parameters, so the statement is built and compiled once.
    """
    statement = _insert(dialect, table)
    new = statement.inserted if dialect in ("mysql", "mariadb") else statement.excluded
    t = table.c
    newer: ColumnElement[bool] = or_(
        t.created_at < new.created_at,
        and_(t.created_at == new.created_at, t.priority < new.priority),
    )
    keep_last = ("priority", "created_at")  # read by `newer`: assigned after everything else
    columns = [c.name for c in table.columns if c.name != "change_id" and c.name not in keep_last]
    if dialect in ("mysql", "mariadb"):
        ordered = [*columns, *keep_last]
        return statement.on_duplicate_key_update(  # type: ignore[no-any-return]
            [(name, case((newer, new[name]), else_=t[name])) for name in ordered]
        )
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[t.change_id],
        set_={name: new[name] for name in [*columns, *keep_last]},
        where=newer,
    )


def lock_upsert(dialect: str, table: Table, values: dict[str, Any], now: Any) -> Insert:
    """Take the lock row when absent, expired at ``now``, or already ours (SQLite, PostgreSQL).

    One statement; the row count says whether we hold the lock.
    """
    statement = _insert(dialect, table).values(**values)
    t = table.c
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[t["key"]],
        set_={
            "owner": statement.excluded.owner,
            "status": statement.excluded.status,
            "expires_at": statement.excluded.expires_at,
        },
        where=or_(t.expires_at <= now, t.owner == statement.excluded.owner),
    )
