"""Airflow hooks, one per audit store kind, chosen by the connection's conn type."""

from __future__ import annotations

import importlib
from typing import Any

from flamingock_provider.engine.errors import ValidationError

DEFAULT_CONN_ID = "flamingock_default"

HOOKS_BY_CONN_TYPE = {
    "flamingock_sql": "flamingock_provider.hooks.sql.FlamingockSqlHook",
    "flamingock_dynamodb": "flamingock_provider.hooks.dynamodb.FlamingockDynamoDBHook",
    "flamingock_mongodb": "flamingock_provider.hooks.mongodb.FlamingockMongoDBHook",
    "flamingock_couchbase": "flamingock_provider.hooks.couchbase.FlamingockCouchbaseHook",
}
"""Conn type -> hook class path. Stores that land later add their line here."""


def get_audit_hook(conn_id: str = DEFAULT_CONN_ID) -> Any:
    """Build the Flamingock hook for an Airflow connection id, chosen by its conn type.

    :raises ValidationError: the connection is missing or is not a Flamingock conn type.
    """
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as err:
        raise _not_found(conn_id, err) from err
    return hook_for_connection(conn, conn_id)


def _not_found(conn_id: str, err: Exception) -> Exception:
    if type(err).__name__ not in {"AirflowNotFoundException", "ConnectionNotFound"}:
        return err
    return ValidationError(
        f"Airflow connection '{conn_id}' is not defined. Create it (UI, `airflow "
        f"connections add`, or an AIRFLOW_CONN_{conn_id.upper()} variable) with one of the "
        f"conn types {', '.join(sorted(HOOKS_BY_CONN_TYPE))}."
    )


def hook_for_connection(conn: Any, conn_id: str | None = None) -> Any:
    """Build the Flamingock hook for an already fetched connection (no further lookup)."""
    conn_id = conn_id or getattr(conn, "conn_id", None) or DEFAULT_CONN_ID
    path = HOOKS_BY_CONN_TYPE.get(conn.conn_type or "")
    if path is None:
        raise ValidationError(
            f"Airflow connection '{conn_id}' has conn type '{conn.conn_type}', which is not a "
            f"Flamingock audit store; use one of {', '.join(sorted(HOOKS_BY_CONN_TYPE))}"
        )
    module, _, name = path.rpartition(".")
    hook_class = getattr(importlib.import_module(module), name)
    return hook_class(conn_id, connection=conn)
