"""``dags/flamingock_dynamodb_example.py`` under a real ``dag.test()``, on DynamoDB Local.

Its connection ``flamingock_dynamodb`` points at the emulator with this test's audit tables; the
catalog table the changes create (``flamingockExampleProducts``) is deleted afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dynamodb_local import Connections, dynamodb_connections, dynamodb_local  # noqa: F401

DAG_ID = "flamingock_dynamodb_example"
PRODUCTS = "flamingockExampleProducts"
CHANGES = ["create-products-table", "seed-products", "price-in-cents"]


@pytest.fixture
def example(
    airflow_db: Path,
    dags_folder: Path,
    dynamodb_connections: Connections,  # noqa: F811 - imported fixture
) -> Iterator[tuple[Any, Connections]]:
    """The example DAG parsed by Airflow's DagBag, its connection on DynamoDB Local."""
    from airflow.dag_processing.dagbag import DagBag

    dynamodb_connections.define("flamingock_dynamodb")
    bag = DagBag(dag_folder=str(dags_folder / "flamingock_dynamodb_example.py"))
    assert {} == bag.import_errors
    yield bag.get_dag(DAG_ID), dynamodb_connections
    client = dynamodb_connections.local.client()
    with contextlib.suppress(client.exceptions.ResourceNotFoundException):
        client.delete_table(TableName=PRODUCTS)


def test_example_dag_applies_the_catalog_changes_then_skips_them(
    example: tuple[Any, Connections],
) -> None:
    """First run: the 3 changes apply (NON_TX table, TX_SHARED seed and migration); second run
    skips them; the sensor passes both times."""
    dag, connections = example

    first = dag.test()
    second = dag.test()

    summaries = [
        next(ti for ti in run.get_task_instances() if ti.task_id == "apply_changes").xcom_pull(
            task_ids="apply_changes"
        )
        for run in (first, second)
    ]
    assert ("success", "success") == (str(first.state), str(second.state))
    assert (CHANGES, CHANGES) == (summaries[0]["applied"], summaries[1]["skipped"])
    items = connections.local.client().scan(TableName=PRODUCTS, ConsistentRead=True)["Items"]
    prices = sorted((i["sku"]["S"], int(i["priceCents"]["N"]), "price" in i) for i in items)
    assert [("mug-001", 800, False), ("tea-001", 450, False), ("tea-002", 390, False)] == prices
    store = connections.store()
    try:
        strategies = [(e.change_id, e.tx_strategy.value) for e in store.read_history()][::2]
    finally:
        store.close()
    assert [
        ("create-products-table", "NON_TX"),
        ("seed-products", "TX_SHARED"),
        ("price-in-cents", "TX_SHARED"),
    ] == strategies
