"""Airflow connections -> Flamingock hooks: ``get_audit_hook`` and ``FlamingockSqlHook``.

Connections are ``AIRFLOW_CONN_*`` variables (JSON form, or URI form where the test says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.hooks import get_audit_hook
from flamingock_provider.hooks.sql import FlamingockSqlHook, sqlalchemy_url_for

SECRET = "S3cretPW"
NO_SUCH_DB = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/db_that_does_not_exist_xyz"
PASSWORD = "p@ss:w/rd"


@pytest.fixture
def host_connection(define_connection: Callable[..., None]) -> Callable[..., None]:
    """Define a ``flamingock_sql`` connection by host/port/login/password/schema."""

    def define(conn_id: str, **overrides: Any) -> None:
        fields: dict[str, Any] = {
            "conn_type": "flamingock_sql",
            "host": "db.example.com",
            "port": 5433,
            "login": "flamingock",
            "password": PASSWORD,
            "schema": "audit",
            "extra": {"dialect": "postgresql+psycopg"},
        }
        fields.update(overrides)
        define_connection(conn_id, **fields)

    return define


# -- choosing the hook --------------------------------------------------------------------


def test_sql_connection_gives_the_sql_hook(sql_connection: Callable[..., None]) -> None:
    """A ``flamingock_sql`` connection is served by FlamingockSqlHook, bound to that conn id."""
    sql_connection("audit_here", "sqlite://")

    hook = get_audit_hook("audit_here")

    assert (FlamingockSqlHook, "audit_here") == (type(hook), hook.flamingock_conn_id)


def test_default_connection_id_is_flamingock_default(sql_connection: Callable[..., None]) -> None:
    """Without a conn id, ``flamingock_default`` is used (no other wiring needed)."""
    sql_connection("flamingock_default", "sqlite://")

    assert "flamingock_default" == get_audit_hook().flamingock_conn_id


def test_missing_connection_is_a_validation_error_naming_it() -> None:
    """A connection that is not defined: ValidationError naming the conn id."""
    with pytest.raises(ValidationError, match="no_such_audit_conn"):
        get_audit_hook("no_such_audit_conn")


def test_connection_of_another_type_is_a_validation_error_naming_the_type(
    define_connection: Callable[..., None],
) -> None:
    """A connection of a non-Flamingock conn type: ValidationError naming that conn type."""
    define_connection("plain_pg", conn_type="postgres", host="127.0.0.1", login="postgres")

    with pytest.raises(ValidationError, match="postgres") as raised:
        get_audit_hook("plain_pg")

    assert "plain_pg" in str(raised.value)


@pytest.mark.parametrize(
    "definition",
    [
        json.dumps({"conn_type": "flamingock_sql", "extra": "{not json"}),
        json.dumps({"conn_type": "flamingock_sql", "extra": "[1, 2]"}),
        "flamingock-sql://db.example.com/audit?__extra__=%7Bnot+json",
    ],
    ids=["json-form", "not-an-object", "uri-form"],
)
def test_malformed_extras_are_a_validation_error_naming_the_connection(
    define_connection: Callable[..., None], definition: str
) -> None:
    """Extras that are not a JSON object fail loudly, naming the connection (not silently {})."""
    define_connection("typo_conn", definition)

    with pytest.raises(ValidationError, match="typo_conn"):
        get_audit_hook("typo_conn").get_audit_store()


# -- extras -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        ("False", False),
        ("0", False),
        (False, False),
        ("true", True),
        (None, True),
    ],
)
def test_auto_create_accepts_booleans_and_strings(
    sql_connection: Callable[..., None], value: Any, expected: bool
) -> None:
    """``auto_create`` is a JSON boolean or a string ("false", "0"..); it defaults to true."""
    extras = {} if value is None else {"auto_create": value}
    sql_connection("audit_conn", "sqlite://", **extras)

    assert expected is get_audit_hook("audit_conn").get_audit_store().auto_create


def test_auto_create_that_is_not_a_boolean_is_a_validation_error(
    sql_connection: Callable[..., None],
) -> None:
    """``auto_create: "maybe"``: ValidationError naming the extra and the connection."""
    sql_connection("audit_conn", "sqlite://", auto_create="maybe")

    with pytest.raises(ValidationError, match="auto_create") as raised:
        get_audit_hook("audit_conn").get_audit_store()

    assert "audit_conn" in str(raised.value)


def test_table_names_come_from_the_extras(sql_connection: Callable[..., None]) -> None:
    """Extras ``audit_table`` and ``lock_table`` name the store's tables."""
    sql_connection("audit_conn", "sqlite://", audit_table="changes_log", lock_table="changes_lock")

    store = get_audit_hook("audit_conn").get_audit_store()

    assert ("changes_log", "changes_lock") == (store.audit_table_name, store.lock_table_name)


def test_default_table_names_are_flamingocks(sql_connection: Callable[..., None]) -> None:
    """Without table extras, Flamingock's default names are used."""
    sql_connection("audit_conn", "sqlite://")

    store = get_audit_hook("audit_conn").get_audit_store()

    assert ("flamingockAuditLog", "flamingockLock") == (
        store.audit_table_name,
        store.lock_table_name,
    )


# -- the URL ------------------------------------------------------------------------------


def test_host_fields_and_dialect_build_the_url_with_the_password_escaped(
    host_connection: Callable[..., None],
) -> None:
    """host/port/login/password/schema + dialect make the URL; the password is URL-escaped."""
    host_connection("by_host")

    url = get_audit_hook("by_host").sqlalchemy_url

    expected = "postgresql+psycopg://flamingock:p%40ss%3Aw%2Frd@db.example.com:5433/audit"
    assert expected == url.render_as_string(hide_password=False)
    assert PASSWORD == url.password


def test_dialect_defaults_to_postgresql_psycopg(host_connection: Callable[..., None]) -> None:
    """Without extra ``dialect``, the host form means PostgreSQL through psycopg."""
    host_connection("by_host", extra={})

    assert "postgresql+psycopg" == get_audit_hook("by_host").sqlalchemy_url.drivername


def test_description_hides_the_password(host_connection: Callable[..., None]) -> None:
    """The store's description (used in every message) shows no password."""
    host_connection("by_host")

    description = get_audit_hook("by_host").get_audit_store().description

    assert PASSWORD not in description
    assert "db.example.com" in description


def test_neither_url_nor_host_is_a_validation_error_naming_the_connection(
    define_connection: Callable[..., None],
) -> None:
    """A connection with no URL extra and no host: ValidationError naming the connection."""
    define_connection("empty_conn", conn_type="flamingock_sql")

    with pytest.raises(ValidationError, match="empty_conn"):
        get_audit_hook("empty_conn").get_audit_store()


def test_url_extra_that_is_not_a_url_is_a_validation_error(
    sql_connection: Callable[..., None],
) -> None:
    """Extra ``url`` that SQLAlchemy cannot parse: ValidationError naming the connection."""
    sql_connection("bad_url", "not a url at all")

    with pytest.raises(ValidationError, match="bad_url"):
        get_audit_hook("bad_url").get_audit_store()


def test_sqlalchemy_url_for_reads_flamingock_connections(
    sql_connection: Callable[..., None],
) -> None:
    """``sqlalchemy_url_for`` (used by SqlTargetSystem) returns a flamingock_sql conn's URL."""
    sql_connection("shop", "sqlite:////tmp/shop.db")

    assert "sqlite:////tmp/shop.db" == str(sqlalchemy_url_for("shop"))


# -- the hook's contract ------------------------------------------------------------------


def test_constructing_the_hook_does_no_io() -> None:
    """A hook is cheap: building one for an undefined connection neither reads nor fails."""
    hook = FlamingockSqlHook("not_defined_anywhere")

    assert "not_defined_anywhere" == hook.flamingock_conn_id


def test_store_and_engine_are_cached(sql_connection: Callable[..., None]) -> None:
    """``get_audit_store`` returns one store per hook, and ``get_conn`` its engine."""
    sql_connection("audit_conn", "sqlite://")
    hook = get_audit_hook("audit_conn")

    store = hook.get_audit_store()

    assert store is hook.get_audit_store()
    assert store.engine is hook.get_conn()


def test_test_connection_succeeds_on_sqlite(tmp_path: Any, sql_connection: Callable) -> None:
    """``test_connection`` on a reachable store: (True, message naming the tables' state)."""
    sql_connection("audit_conn", f"sqlite:///{tmp_path / 'audit.db'}")
    hook = get_audit_hook("audit_conn")

    before = hook.test_connection()
    hook.get_audit_store().initialize()
    after = hook.test_connection()

    assert (True, True) == (before[0], after[0])
    assert ("not created yet" in before[1], "present" in after[1]) == (True, True)


@pytest.mark.parametrize("form", ["url-extra", "password-field"])
def test_test_connection_reports_failure_without_the_password(
    define_connection: Callable[..., None], form: str
) -> None:
    """An unreachable database: (False, message), never an exception, never the password."""
    if form == "url-extra":
        define_connection("pg_audit", conn_type="flamingock_sql", extra={"url": NO_SUCH_DB})
    else:
        define_connection(
            "pg_audit",
            conn_type="flamingock_sql",
            host="127.0.0.1",
            port=5432,
            login="postgres",
            password=SECRET,
            schema="db_that_does_not_exist_xyz",
        )
    hook = get_audit_hook("pg_audit")

    ok, message = hook.test_connection()

    assert ok is False
    assert message
    assert SECRET not in message
    assert SECRET not in hook.get_audit_store().description


def test_test_connection_reports_bad_configuration(define_connection: Callable) -> None:
    """A misconfigured connection: (False, message naming it) rather than an exception."""
    define_connection("empty_conn", conn_type="flamingock_sql")

    ok, message = FlamingockSqlHook("empty_conn").test_connection()

    assert (False, True) == (ok, "empty_conn" in message)
