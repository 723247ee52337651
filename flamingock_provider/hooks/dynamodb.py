"""FlamingockDynamoDBHook: a ``flamingock_dynamodb`` Airflow connection -> a DynamoDB audit store.

Login / password are the access key id / secret access key (extra ``aws_session_token`` for
temporary credentials); all empty means boto3's default chain (instance role, environment,
profile). Extras ``region_name`` and ``endpoint_url`` say where. The secret and the token never
appear in a message. boto3 is imported only when the store or a client is built.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.hooks._base import FlamingockHook
from flamingock_provider.hooks._extras import as_bool, parse_extras

if TYPE_CHECKING:
    from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

CLIENT_EXTRAS = ("region_name", "endpoint_url", "aws_session_token")


class FlamingockDynamoDBHook(FlamingockHook):
    """Connect to a DynamoDB audit store (Amazon DynamoDB, or DynamoDB Local).

    :param flamingock_conn_id: the Airflow connection id (conn type ``flamingock_dynamodb``).
    """

    conn_type = "flamingock_dynamodb"
    hook_name = "Flamingock DynamoDB audit store"
    ui_field_behaviour_name = "DYNAMODB_UI_FIELD_BEHAVIOUR"

    @cached_property
    def client_options(self) -> dict[str, Any]:
        """Where and as whom: region, endpoint and credentials (secrets inside: never log)."""
        return client_options(self.connection, self.extras)

    @cached_property
    def store_options(self) -> dict[str, Any]:
        """Every `DynamoDBAuditStore` keyword argument this connection sets."""
        extras, conn_id = self.extras, self.flamingock_conn_id
        return {
            **self.client_options,
            "audit_table": str(extras.get("audit_table") or "flamingockAuditLog"),
            "lock_table": str(extras.get("lock_table") or "flamingockLock"),
            "auto_create": as_bool(conn_id, "auto_create", extras.get("auto_create"), True),
            "billing_mode": str(extras.get("billing_mode") or "PAY_PER_REQUEST").upper(),
            "read_capacity_units": _as_int(conn_id, "read_capacity_units", extras),
            "write_capacity_units": _as_int(conn_id, "write_capacity_units", extras),
        }

    @cached_property
    def _store(self) -> DynamoDBAuditStore:
        from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

        return DynamoDBAuditStore(**self.store_options)

    def get_audit_store(self) -> DynamoDBAuditStore:
        """The configured `DynamoDBAuditStore` (tables are created or checked on first run)."""
        return self._store

    def get_conn(self) -> Any:
        """The audit store's boto3 DynamoDB client (cached with the store)."""
        return self.get_audit_store().client

    def test_connection(self) -> tuple[bool, str]:
        """Describe the audit and lock tables, once, without retries; never raises."""
        try:
            from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

            probe = DynamoDBAuditStore(**{**self.store_options, "max_attempts": 1})
            try:
                tables = "present" if probe.is_initialized() else "not created yet"
            finally:
                probe.close()
            return True, f"Connected to {probe.description}; audit tables {tables}."
        except Exception as err:
            return False, self._scrub(f"{type(err).__name__}: {err}")

    def _scrub(self, text: str) -> str:
        try:
            options = self.client_options
        except Exception:
            options = {}
        password = getattr(self.__dict__.get("connection"), "password", None)
        for secret in (password, options.get("aws_session_token")):
            if secret:
                text = text.replace(str(secret), "***")
        return text


def client_options(connection: Any, extras: dict[str, Any]) -> dict[str, Any]:
    """Client keyword arguments from a connection: login/password + region/endpoint/token.

    Reads ``flamingock_dynamodb`` connections and the Amazon provider's ``aws`` ones alike
    (they name these extras the same way).
    """
    options: dict[str, Any] = {
        name: str(extras[name]) for name in CLIENT_EXTRAS if extras.get(name) not in (None, "")
    }
    if connection.login:
        options["aws_access_key_id"] = str(connection.login)
    if connection.password:
        options["aws_secret_access_key"] = str(connection.password)
    return options


def client_options_for(conn_id: str) -> dict[str, Any]:
    """Client keyword arguments for `DynamoDBTargetSystem` from an Airflow connection id."""
    from flamingock_provider.hooks import _not_found

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as err:
        raise _not_found(conn_id, err) from err
    if conn.conn_type not in (FlamingockDynamoDBHook.conn_type, "aws"):
        raise ValidationError(
            f"Airflow connection '{conn_id}' has conn type '{conn.conn_type}'; a DynamoDB target "
            "needs a flamingock_dynamodb (or aws) connection"
        )
    return client_options(conn, parse_extras(conn_id, conn.extra))


def _as_int(conn_id: str, name: str, extras: dict[str, Any]) -> int | None:
    value = extras.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number <= 0 or isinstance(value, bool):
        raise ValidationError(
            f"Airflow connection '{conn_id}': extra '{name}' must be a positive integer, "
            f"got {value!r}"
        )
    return number
