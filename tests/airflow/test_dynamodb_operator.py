"""FlamingockOperator on DynamoDB Local, ``execute(context={})``: apply, re-run, failure, TX_SHARED.

The audit connection ``flamingock_default`` (conn type ``flamingock_dynamodb``) and the target
use the same emulator and credentials, so transactional changes are `TX_SHARED`; the change
units write a table ``<prefix>items`` of the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException
from dynamodb_local import Connections, dynamodb_connections, dynamodb_local  # noqa: F401

from flamingock_provider.changes import Stage
from flamingock_provider.engine.lock import utc_now
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.targets import DynamoDBTargetSystem

TX = "client, transaction"


@pytest.fixture
def world(dynamodb_connections: Connections) -> Connections:  # noqa: F811 - imported fixture
    """``flamingock_default`` -> DynamoDB Local on the test's tables; table ``items`` made."""
    dynamodb_connections.define("flamingock_default")
    dynamodb_connections.create_table("items")
    return dynamodb_connections


@pytest.fixture
def make_operator(world: Connections) -> Callable[..., FlamingockOperator]:
    """An operator whose one target is DynamoDB through the audit store's own connection."""

    def make(stages: Sequence[Stage], **overrides: Any) -> FlamingockOperator:
        fields: dict[str, Any] = {
            "task_id": "apply_changes",
            "stages": stages,
            "target_systems": [
                DynamoDBTargetSystem(
                    "catalog", conn_id="flamingock_default", marker_table=world.name("marker")
                )
            ],
        }
        fields.update(overrides)
        return FlamingockOperator(**fields)

    return make


def put(world: Connections, *ids: str) -> str:
    """A change body putting items ``ids`` into the items table through the transaction."""
    table = world.name("items")
    return "; ".join(f"transaction.put({table!r}, {{'id': {i!r}}})" for i in ids)


def history(world: Connections) -> list[tuple[str, str, str]]:
    store = world.store()
    try:
        return [(e.change_id, e.state.value, e.tx_strategy.value) for e in store.read_history()]
    finally:
        store.close()


def item_ids(world: Connections) -> list[str]:
    return sorted(item["id"]["S"] for item in world.items("items"))


def test_apply_then_rerun_skips_without_writing(
    make_operator: Callable[..., FlamingockOperator], packages: Any, world: Connections
) -> None:
    """First execution applies both changes (TX_SHARED and NON_TX); the second skips both."""
    stage = packages.stage(
        "catalog",
        [
            {"id": "seed-items", "params": TX, "body": put(world, "a", "b")},
            {
                "id": "note-item",
                "params": "client",
                "transactional": False,
                "body": f"client.put_item(TableName={world.name('items')!r}, "
                "Item={'id': {'S': 'note'}})",
            },
        ],
    )

    first = make_operator([stage]).execute(context={})
    second = make_operator([stage]).execute(context={})

    assert (["seed-items", "note-item"], []) == (first["applied"], first["skipped"])
    assert ([], ["seed-items", "note-item"]) == (second["applied"], second["skipped"])
    assert ["a", "b", "note"] == item_ids(world)
    assert [
        ("seed-items", "STARTED", "TX_SHARED"),
        ("seed-items", "APPLIED", "TX_SHARED"),
        ("note-item", "STARTED", "NON_TX"),
        ("note-item", "APPLIED", "NON_TX"),
    ] == history(world)


def test_tx_shared_audit_commits_with_the_change(
    make_operator: Callable[..., FlamingockOperator], packages: Any, world: Connections
) -> None:
    """Same endpoint, region and account: TX_SHARED, no marker table, one commit for all."""
    stage = packages.stage("catalog", [{"id": "seed-items", "params": TX, "body": put(world, "a")}])

    make_operator([stage]).execute(context={})

    assert [("seed-items", "STARTED", "TX_SHARED"), ("seed-items", "APPLIED", "TX_SHARED")] == (
        history(world)
    )
    assert world.name("marker") not in world.local.table_names(world.prefix)


def test_transactional_failure_writes_nothing_and_the_fixed_change_applies(
    make_operator: Callable[..., FlamingockOperator], packages: Any, world: Connections
) -> None:
    """A transactional change that raises after collecting writes: none lands; FAILED is
    recorded (no issue), and the fixed change applies on the next execution."""
    failing = packages.stage(
        "broken",
        [{"id": "seed-items", "params": TX, "body": put(world, "a") + "; 1 / 0"}],
    )
    fixed = packages.stage("fixed", [{"id": "seed-items", "params": TX, "body": put(world, "a")}])

    with pytest.raises(AirflowException, match="seed-items") as raised:
        make_operator([failing]).execute(context={})
    after_failure = (item_ids(world), history(world))
    retry = make_operator([Stage("broken", fixed.package)]).execute(context={})

    assert "ZeroDivisionError" in str(raised.value)
    expected = [("seed-items", "STARTED", "TX_SHARED"), ("seed-items", "FAILED", "TX_SHARED")]
    assert ([], expected) == after_failure
    assert (["seed-items"], ["a"]) == (retry["applied"], item_ids(world))


def test_a_lock_held_by_another_run_is_waited_out(
    make_operator: Callable[..., FlamingockOperator], packages: Any, world: Connections
) -> None:
    """Another run's lease ending in 0.8 s: the operator waits for it, then applies."""
    stage = packages.stage("catalog", [{"id": "seed-items", "params": TX, "body": put(world, "a")}])
    store = world.store()
    store.initialize()
    now = utc_now()
    assert store.lock_acquire("DEFAULT_KEY", "other@host#1", now, now + timedelta(seconds=0.8))
    store.close()

    started = time.monotonic()
    summary = make_operator([stage], lock_wait=30, lock_retry=0.1).execute(context={})
    waited = time.monotonic() - started

    assert (["seed-items"], True) == (summary["applied"], 0.5 <= waited < 10)
