"""FlamingockSqlHook: an Airflow connection of type ``flamingock_sql`` -> a SQL audit store.

The database is given either as a SQLAlchemy URL in extra ``url`` or by host/port/login/
password/schema with extra ``dialect`` (``postgresql+psycopg``, ``mysql+pymysql``, ``sqlite``).
The password is never rendered into a message: descriptions hide it.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.hooks._base import FlamingockHook
from flamingock_provider.hooks._extras import as_bool

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL

    from flamingock_provider.stores.sql import SqlAuditStore

DEFAULT_DIALECT = "postgresql+psycopg"


class FlamingockSqlHook(FlamingockHook):
    """Connect to a SQL audit store (SQLite, PostgreSQL, MySQL/MariaDB).

    :param flamingock_conn_id: the Airflow connection id (conn type ``flamingock_sql``).
    """

    conn_type = "flamingock_sql"
    hook_name = "Flamingock SQL audit store"
    ui_field_behaviour_name = "SQL_UI_FIELD_BEHAVIOUR"

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """The database URL; the password is inside, so never log it unhidden."""
        from sqlalchemy.engine import URL, make_url
        from sqlalchemy.exc import ArgumentError

        conn, extras = self.connection, self.extras
        if extras.get("url"):
            try:
                url = make_url(str(extras["url"]))
            except (ArgumentError, ValueError):  # ValueError: e.g. a port that is no number
                raise ValidationError(
                    f"Airflow connection '{self.flamingock_conn_id}': extra 'url' is not a "
                    "SQLAlchemy URL (e.g. sqlite:////path/audit.db, postgresql+psycopg://..)"
                ) from None
            if url.host and "@" in url.host:
                # An unescaped "@" in the password: the rest of the password was read as the
                # host, and would show in every message. Refuse without echoing the URL.
                raise ValidationError(
                    f"Airflow connection '{self.flamingock_conn_id}': extra 'url' has an '@' "
                    "after the user part; URL-encode the password ('@' as %40)"
                )
            return url
        if not conn.host:
            raise ValidationError(
                f"Airflow connection '{self.flamingock_conn_id}': set extra 'url' or the host "
                "(with extra 'dialect')"
            )
        return URL.create(
            str(extras.get("dialect") or DEFAULT_DIALECT),
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host,
            port=conn.port or None,
            database=conn.schema or None,
        )

    def get_conn(self) -> Engine:
        """The audit store's SQLAlchemy engine (cached with the store)."""
        return self.get_audit_store().engine

    @cached_property
    def _store(self) -> SqlAuditStore:
        from flamingock_provider.stores.sql import SqlAuditStore

        extras, conn_id = self.extras, self.flamingock_conn_id
        return SqlAuditStore(
            self.sqlalchemy_url,
            audit_table=str(extras.get("audit_table") or "flamingockAuditLog"),
            lock_table=str(extras.get("lock_table") or "flamingockLock"),
            auto_create=as_bool(conn_id, "auto_create", extras.get("auto_create"), True),
        )

    def get_audit_store(self) -> SqlAuditStore:
        """The configured `SqlAuditStore` (tables are created or checked on first run)."""
        return self._store

    def test_connection(self) -> tuple[bool, str]:
        """Run ``SELECT 1`` and report whether the audit tables exist; never raises."""
        try:
            store = self.get_audit_store()
            from sqlalchemy import text

            with store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            tables = "present" if store.is_initialized() else "not created yet"
            return True, f"Connected to {store.description}; audit tables {tables}."
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            password = (
                getattr(self.connection, "password", None)
                if "connection" in self.__dict__
                else None
            )
            if password:
                message = message.replace(password, "***")
            return False, message


def sqlalchemy_url_for(conn_id: str) -> URL:
    """A SQLAlchemy URL for any SQL connection, for `SqlTargetSystem`.

    ``flamingock_sql`` connections are read as above; other conn types through their own hook's
    ``sqlalchemy_url`` (the common-sql providers offer it).
    """
    from flamingock_provider.hooks import _not_found

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as err:
        raise _not_found(conn_id, err) from err
    if conn.conn_type == FlamingockSqlHook.conn_type:
        return FlamingockSqlHook(conn_id, connection=conn).sqlalchemy_url
    try:
        hook = conn.get_hook()  # type: ignore[no-untyped-call]
    except Exception as err:
        raise ValidationError(
            f"Airflow connection '{conn_id}' (conn type '{conn.conn_type}') has no usable hook "
            f"({type(err).__name__}: {err}); use a flamingock_sql connection or a SQL "
            "provider's connection"
        ) from err
    try:
        url = getattr(hook, "sqlalchemy_url", None)
    except Exception:  # common-sql hooks raise NotImplementedError when they have none
        url = None
    if url is None:
        raise ValidationError(
            f"Airflow connection '{conn_id}' (conn type '{conn.conn_type}') offers no SQLAlchemy "
            "URL; use a flamingock_sql connection or a SQL provider's connection"
        )
    return url  # type: ignore[no-any-return]
