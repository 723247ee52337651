"""``flamingock_dynamodb`` connections -> FlamingockDynamoDBHook -> a DynamoDB audit store.

Connections are ``AIRFLOW_CONN_*`` variables in JSON form. The tests that connect use the
session's DynamoDB Local (`dynamodb_local`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dynamodb_local import Connections, dynamodb_connections, dynamodb_local  # noqa: F401
from test_dag_parse_imports import modules_loaded_by

from flamingock_provider import get_provider_info
from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.hooks import get_audit_hook
from flamingock_provider.hooks.dynamodb import FlamingockDynamoDBHook
from flamingock_provider.targets import DynamoDBTargetSystem

SECRET = "S3cretAccessKeyValue"
TOKEN = "T0kenSessionValue"


@pytest.fixture
def dynamodb_connection(define_connection: Callable[..., None]) -> Callable[..., None]:
    """Define a ``flamingock_dynamodb`` connection from login/password and extras."""

    def define(conn_id: str, login: str = "", password: str = "", **extras: Any) -> None:
        define_connection(
            conn_id, conn_type="flamingock_dynamodb", login=login, password=password, extra=extras
        )

    return define


# -- choosing the hook, reading the connection ----------------------------------------------


def test_dynamodb_connection_gives_the_dynamodb_hook(
    dynamodb_connection: Callable[..., None],
) -> None:
    """A ``flamingock_dynamodb`` connection is served by FlamingockDynamoDBHook, for that id."""
    dynamodb_connection("audit_here", region_name="eu-west-1")

    hook = get_audit_hook("audit_here")

    assert (FlamingockDynamoDBHook, "audit_here") == (type(hook), hook.flamingock_conn_id)


def test_connection_fields_and_extras_configure_the_store(
    dynamodb_connection: Callable[..., None],
) -> None:
    """Login/password/token are the credentials; extras name region, endpoint, tables, billing."""
    dynamodb_connection(
        "audit_conn",
        "AKIDEXAMPLE",
        SECRET,
        aws_session_token=TOKEN,
        region_name="eu-west-1",
        endpoint_url="http://127.0.0.1:8000",
        audit_table="changes_log",
        lock_table="changes_lock",
        auto_create="false",
        billing_mode="provisioned",
        read_capacity_units="5",
        write_capacity_units=2,
    )

    store = get_audit_hook("audit_conn").get_audit_store()

    settings = store.settings
    assert ("AKIDEXAMPLE", SECRET, TOKEN) == (
        settings.aws_access_key_id,
        settings.aws_secret_access_key,
        settings.aws_session_token,
    )
    assert ("eu-west-1", "http://127.0.0.1:8000") == (settings.region_name, settings.endpoint_url)
    assert ("changes_log", "changes_lock", False, "PROVISIONED", 5, 2) == (
        store.audit_table_name,
        store.lock_table_name,
        store.auto_create,
        store.billing_mode,
        store.read_capacity_units,
        store.write_capacity_units,
    )


def test_empty_connection_uses_the_default_chain_and_flamingock_table_names(
    dynamodb_connection: Callable[..., None],
) -> None:
    """No login, no extras: boto3's default credentials and region; Flamingock's table names."""
    dynamodb_connection("audit_conn")

    store = get_audit_hook("audit_conn").get_audit_store()

    assert (None, None, None, None) == (
        store.settings.aws_access_key_id,
        store.settings.aws_secret_access_key,
        store.settings.region_name,
        store.settings.endpoint_url,
    )
    assert ("flamingockAuditLog", "flamingockLock", True, "PAY_PER_REQUEST") == (
        store.audit_table_name,
        store.lock_table_name,
        store.auto_create,
        store.billing_mode,
    )


@pytest.mark.parametrize("value", ["lots", 0, -3, True])
def test_capacity_that_is_not_a_positive_integer_is_a_validation_error(
    dynamodb_connection: Callable[..., None], value: Any
) -> None:
    """``read_capacity_units`` must be a positive integer; the error names extra and connection."""
    dynamodb_connection("audit_conn", read_capacity_units=value)

    with pytest.raises(ValidationError, match="read_capacity_units") as raised:
        get_audit_hook("audit_conn").get_audit_store()

    assert "audit_conn" in str(raised.value)


def test_building_the_hook_and_store_does_no_io(dynamodb_connection: Callable[..., None]) -> None:
    """Hook and store are cheap: no client is built until the first call that needs one."""
    dynamodb_connection("audit_conn", endpoint_url="http://127.0.0.1:9", region_name="us-east-1")

    store = get_audit_hook("audit_conn").get_audit_store()

    assert "client" not in store.__dict__


# -- test_connection ------------------------------------------------------------------------


def test_test_connection_reports_the_tables(
    dynamodb_connections: Connections,  # noqa: F811 - the fixture imported above
) -> None:
    """On a reachable endpoint: success, saying whether the audit tables exist yet."""
    dynamodb_connections.define("audit_conn")
    hook = FlamingockDynamoDBHook("audit_conn")

    before = hook.test_connection()
    hook.get_audit_store().initialize()
    after = hook.test_connection()

    assert (True, True) == (before[0], after[0])
    assert ("not created yet" in before[1], "present" in after[1]) == (True, True)


def test_test_connection_fails_without_raising_or_showing_secrets(
    dynamodb_connection: Callable[..., None],
) -> None:
    """An unreachable endpoint: ``(False, reason)``; neither the secret nor the token shown."""
    dynamodb_connection(
        "audit_conn",
        "AKIDEXAMPLE",
        SECRET,
        aws_session_token=TOKEN,
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
    )

    ok, message = FlamingockDynamoDBHook("audit_conn").test_connection()

    assert (False, True, False) == (ok, "127.0.0.1:9" in message, SECRET in message)
    assert TOKEN not in message


# -- provider info --------------------------------------------------------------------------


def _connection_type() -> dict[str, Any]:
    (entry,) = [
        c
        for c in get_provider_info()["connection-types"]
        if c["connection-type"] == "flamingock_dynamodb"
    ]
    return entry


def test_provider_info_declares_the_dynamodb_connection_type() -> None:
    """``flamingock_dynamodb``: its hook, every extra of ARCHITECTURE.md §5, the secret masked."""
    entry = _connection_type()

    assert "flamingock_provider.hooks.dynamodb.FlamingockDynamoDBHook" == entry["hook-class-name"]
    expected = {
        "region_name",
        "endpoint_url",
        "aws_session_token",
        "audit_table",
        "lock_table",
        "auto_create",
        "billing_mode",
        "read_capacity_units",
        "write_capacity_units",
    }
    assert expected == set(entry["conn-fields"])
    assert "password" == entry["conn-fields"]["aws_session_token"]["schema"]["format"]
    assert "flamingock_provider.hooks.dynamodb" in get_provider_info()["hooks"][0]["python-modules"]


def test_ui_field_behaviour_is_one_object_wherever_airflow_reads_it() -> None:
    """The provider info's UI behaviour is the very dict the hook returns."""
    assert (
        FlamingockDynamoDBHook.get_ui_field_behaviour() is _connection_type()["ui-field-behaviour"]
    )


# -- DAG files stay light -------------------------------------------------------------------


def test_dag_files_using_dynamodb_import_no_driver(dags_folder: Path) -> None:
    """The DynamoDB example DAG, the target class and the hook module load neither boto3 nor
    botocore (checked in a fresh interpreter)."""
    dag_file = str(dags_folder / "flamingock_dynamodb_example.py")
    code = f"""
import importlib.util
from flamingock_provider.targets import DynamoDBTargetSystem
import flamingock_provider.hooks.dynamodb
DynamoDBTargetSystem("db", conn_id="some_conn").injectable_names()
spec = importlib.util.spec_from_file_location("example", {dag_file!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
"""
    assert [] == modules_loaded_by(code, dags_folder)


def test_target_with_conn_id_and_explicit_settings_is_refused() -> None:
    """A target takes a connection or explicit client settings, not both."""
    with pytest.raises(ValidationError, match="not both"):
        DynamoDBTargetSystem("db", conn_id="c", region_name="eu-west-1")
