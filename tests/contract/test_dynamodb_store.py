"""What only the DynamoDB store promises, on DynamoDB Local: tables, round trips, errors, secrets.

The behaviour every store shares is in test_store_contract.py (which runs on DynamoDB too).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from store_backends import DynamoDBBackend

from flamingock_provider.engine.errors import AuditStoreError, ValidationError
from flamingock_provider.engine.model import AuditEntry, AuditState
from flamingock_provider.stores._dynamodb_transaction import DynamoDBTransaction
from flamingock_provider.stores.dynamodb import DynamoDBAuditStore
from flamingock_provider.targets.dynamodb import DynamoDBTargetSystem

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
SECRET = "S3cretAccessKeyValue"
TOKEN = "T0kenSessionValue"
OWNER = "alice@host-a#1"


@pytest.fixture
def dynamo(tmp_path: Path) -> Iterator[DynamoDBBackend]:
    """Stores on this test's own tables of DynamoDB Local; every table is deleted afterwards."""
    backend = DynamoDBBackend(tmp_path)
    try:
        yield backend
    finally:
        backend.close()


def _store(dynamo: DynamoDBBackend, **options: Any) -> DynamoDBAuditStore:
    store = dynamo(**options)
    assert isinstance(store, DynamoDBAuditStore)
    return store


def _entry(change_id: str = "change-a", seconds: float = 0, **overrides: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "execution_id": "exec-1",
        "change_id": change_id,
        "state": AuditState.APPLIED,
        "created_at": T0 + timedelta(seconds=seconds),
    }
    fields.update(overrides)
    return AuditEntry(**fields)


def _create(dynamo: DynamoDBBackend, name: str, *keys: tuple[str, str]) -> None:
    """Create ``name`` with string keys ``(attribute, HASH|RANGE)``."""
    dynamo.local.client().create_table(
        TableName=name,
        KeySchema=[{"AttributeName": a, "KeyType": k} for a, k in keys],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in keys],
        BillingMode="PAY_PER_REQUEST",
    )


def _calls(store: DynamoDBAuditStore) -> list[str]:
    seen: list[str] = []
    store.client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: seen.append(model.name), unique_id=id(seen)
    )
    return seen


# -- tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize("auto_create", [True, False], ids=["auto-create", "validate-only"])
@pytest.mark.parametrize("which", ["audit", "lock"])
def test_a_table_with_another_key_schema_is_refused_naming_found_and_expected(
    dynamo: DynamoDBBackend, auto_create: bool, which: str
) -> None:
    """A same-named table of another key schema: the error names it, what it has, what we need."""
    table = dynamo.audit_table if which == "audit" else dynamo.lock_table
    _create(dynamo, table, ("id", "HASH"))
    if not auto_create:  # the other table is fine, so the one at fault is the one named
        if which == "audit":
            _create(dynamo, dynamo.lock_table, ("key", "HASH"))
        else:
            _create(dynamo, dynamo.audit_table, ("partitionKey", "HASH"), ("sortKey", "RANGE"))
    store = _store(dynamo, auto_create=auto_create)

    with pytest.raises(AuditStoreError) as caught:
        store.initialize()

    expected = "[partitionKey HASH S, sortKey RANGE S]" if which == "audit" else "[key HASH S]"
    message = str(caught.value)
    assert (True, True, True) == (
        f"table '{table}'" in message,
        "[id HASH S]" in message,
        f"expected {expected}" in message,
    )


@pytest.mark.parametrize("present", ["none", "audit", "lock"])
def test_without_auto_create_a_missing_table_is_named_and_nothing_created(
    dynamo: DynamoDBBackend, present: str
) -> None:
    """``auto_create=False`` creates nothing and names the missing table and its key schema."""
    if present == "audit":
        _create(dynamo, dynamo.audit_table, ("partitionKey", "HASH"), ("sortKey", "RANGE"))
    if present == "lock":
        _create(dynamo, dynamo.lock_table, ("key", "HASH"))
    missing = dynamo.lock_table if present == "audit" else dynamo.audit_table
    store = _store(dynamo, auto_create=False)

    with pytest.raises(AuditStoreError) as caught:
        store.initialize()

    assert f"table '{missing}' does not exist and auto_create is off" in str(caught.value)
    assert missing not in dynamo.local.table_names(dynamo.prefix)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ("PAY_PER_REQUEST", 0, 0)),
        (
            {"billing_mode": "PROVISIONED", "read_capacity_units": 3, "write_capacity_units": 4},
            ("PROVISIONED", 3, 4),
        ),
    ],
    ids=["on-demand", "provisioned"],
)
def test_tables_are_created_with_the_billing_mode_asked_for(
    dynamo: DynamoDBBackend, options: dict[str, Any], expected: tuple[str, int, int]
) -> None:
    """Created tables are on-demand by default, or provisioned with the capacities given."""
    _store(dynamo, **options).initialize()

    client = dynamo.local.client()
    for table in (dynamo.audit_table, dynamo.lock_table):
        found = client.describe_table(TableName=table)["Table"]
        mode = found.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
        throughput = found["ProvisionedThroughput"]
        actual = (mode, throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"])
        assert expected == actual


@pytest.mark.parametrize(
    "options",
    [
        {"billing_mode": "PROVISIONED"},
        {"billing_mode": "PROVISIONED", "read_capacity_units": 5},
        {"billing_mode": "ON_DEMAND"},
    ],
    ids=["no-capacity", "half-capacity", "unknown-mode"],
)
def test_a_billing_mode_dynamodb_would_refuse_is_a_validation_error(
    dynamo: DynamoDBBackend, options: dict[str, Any]
) -> None:
    """A bad billing set-up is refused before any table is created, naming what to set."""
    with pytest.raises(ValidationError, match="billing_mode"):
        _store(dynamo, **options).initialize()

    assert [] == dynamo.local.table_names(dynamo.prefix)


def test_runners_initialising_a_fresh_store_at_once_all_succeed(dynamo: DynamoDBBackend) -> None:
    """Eight stores creating the same tables concurrently: every one ends up initialised."""
    stores = [_store(dynamo) for _ in range(8)]
    errors: list[BaseException] = []

    def initialize(store: DynamoDBAuditStore) -> None:
        try:
            store.initialize()
        except BaseException as err:  # collected, asserted below
            errors.append(err)

    threads = [threading.Thread(target=initialize, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert ([], [True] * 8) == (errors, [s.is_initialized() for s in stores])


# -- round trips -----------------------------------------------------------------------------


def test_each_audit_and_lock_operation_is_one_round_trip(dynamo: DynamoDBBackend) -> None:
    """Append, read_latest (any history length), and every lock call: one request each."""
    store = _store(dynamo)
    store.initialize()
    for i in range(30):
        store.append(_entry(f"c{i % 3}", i, execution_id=f"e{i}"))
    seen = _calls(store)
    counts = {}
    steps = {
        "append": lambda: store.append(_entry("c9", 99)),
        "read_latest": store.read_latest,
        "acquire": lambda: store.lock_acquire("k", OWNER, T0, T0 + timedelta(seconds=60)),
        "refused": lambda: store.lock_acquire("k", "bob", T0, T0 + timedelta(seconds=60)),
        "extend": lambda: store.lock_extend("k", OWNER, T0, T0 + timedelta(seconds=90)),
        "release": lambda: store.lock_release("k", OWNER),
    }
    for name, step in steps.items():
        seen.clear()
        step()
        counts[name] = list(seen)

    assert {
        "append": ["TransactWriteItems"],
        "read_latest": ["Query"],
        "acquire": ["PutItem"],
        "refused": ["PutItem"],
        "extend": ["UpdateItem"],
        "release": ["DeleteItem"],
    } == counts


def test_an_older_entry_keeps_the_latest_record_and_joins_the_history(
    dynamo: DynamoDBBackend,
) -> None:
    """An entry older than its change's latest (clock skew) is kept in history only: 2 trips."""
    store = _store(dynamo)
    store.initialize()
    newer = _entry(seconds=10, execution_id="e2")
    older = _entry(seconds=0, state=AuditState.STARTED)
    store.append(newer)
    seen = _calls(store)

    store.append(older)

    assert ["TransactWriteItems", "TransactWriteItems"] == seen
    assert ({"change-a": newer}, [older, newer]) == (
        dict(store.read_latest()),
        store.read_history(),
    )


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", ["read_latest", "read_history"])
def test_a_record_with_an_unknown_state_is_reported_naming_its_change(
    dynamo: DynamoDBBackend, reader: str
) -> None:
    """A record the store cannot map back to the model raises AuditStoreError naming the change."""
    store = _store(dynamo)
    store.initialize()
    item = store.render_audit([_entry("hand-edited")], frozenset()).operations[-1]["Put"]["Item"]
    item["state"] = {"S": "HALF_DONE"}
    dynamo.local.client().put_item(TableName=dynamo.audit_table, Item=item)
    history = dict(item, partitionKey={"S": "change#hand-edited"}, sortKey={"S": "x#HALF_DONE"})
    dynamo.local.client().put_item(TableName=dynamo.audit_table, Item=history)

    with pytest.raises(AuditStoreError) as caught:
        getattr(store, reader)()

    assert "'hand-edited'" in str(caught.value)


def test_a_refused_request_names_table_and_operation_and_keeps_its_cause(
    dynamo: DynamoDBBackend,
) -> None:
    """A DynamoDB error that is not retried (here: the table is gone) is an AuditStoreError."""
    store = _store(dynamo)
    store.initialize()
    dynamo.local.client().delete_table(TableName=dynamo.audit_table)

    with pytest.raises(AuditStoreError) as caught:
        store.read_latest()

    message = str(caught.value)
    assert (True, True, True) == (
        f"read_latest on table '{dynamo.audit_table}'" in message,
        "ResourceNotFoundException" in message,
        isinstance(caught.value.__cause__, ClientError),
    )


def test_a_transaction_of_another_store_is_refused(dynamo: DynamoDBBackend) -> None:
    """Appending inside a transaction on another endpoint or account raises, writing nothing."""
    store = _store(dynamo)
    store.initialize()
    foreign = DynamoDBTransaction(store.client, ("http://elsewhere", "us-east-1", "x"))

    with pytest.raises(AuditStoreError):
        store.append(_entry(), transaction=foreign)

    assert ([], 0) == (store.read_history(), len(foreign))


def test_throttling_and_server_errors_are_retried_by_botocore(dynamo: DynamoDBBackend) -> None:
    """The client retries throttling, 5xx and connection errors (botocore's standard mode)."""
    store = _store(dynamo)

    assert {"mode": "standard", "total_max_attempts": 8} == store.client.meta.config.retries


def test_secrets_never_appear_in_descriptions_reprs_or_errors() -> None:
    """The secret key and session token stay out of every text a user or a log can see."""
    options = {
        "endpoint_url": "http://127.0.0.1:9",  # nothing listens: every call fails
        "region_name": "us-east-1",
        "aws_access_key_id": "AKIDEXAMPLE",
        "aws_secret_access_key": SECRET,
        "aws_session_token": TOKEN,
    }
    store = DynamoDBAuditStore(**options, max_attempts=1)
    target = DynamoDBTargetSystem("db", **options)
    texts = [store.description, repr(store), repr(store.settings), repr(target)]
    try:
        for call in (store.initialize, store.read_latest, lambda: store.lock_holder("k")):
            with pytest.raises(AuditStoreError) as caught:
                call()
            texts.append(str(caught.value))
            texts.append("".join(traceback.format_exception(caught.value)))
    finally:
        store.close()

    assert (True, []) == (
        "127.0.0.1:9" in texts[-1],
        [t for t in texts if SECRET in t or TOKEN in t],
    )
