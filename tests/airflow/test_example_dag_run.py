"""The example DAG under a real ``dag.test()`` against Airflow's (SQLite) metadata database.

``dags/flamingock_example.py`` evolves a shop database in two stages (schema: orders table and
index; data: backfill and a non-transactional summary table), then an issue sensor gates a
downstream ``report`` task. Its two connections are injected as ``AIRFLOW_CONN_*`` variables
pointing at SQLite files of the test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DAG_ID = "flamingock_example"
TASK_ID = "apply_changes"
SCHEMA = ["create-orders-table", "index-orders-by-customer"]
DATA = ["backfill-orders", "create-customer-totals"]
ALL_CHANGES = SCHEMA + DATA


@pytest.fixture(scope="module")
def example_dag(airflow_db: Path, dags_folder: Path) -> Any:
    """The example DAG, parsed by Airflow's own DagBag from the dags folder."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder / "flamingock_example.py"))
    assert {} == bag.import_errors
    return bag.get_dag(DAG_ID)


@pytest.fixture
def run_example(example_dag: Any, audit_db: Any, shop_db: Any) -> Callable[[], tuple[Any, Any]]:
    """Run the example DAG once with ``dag.test()``; return ``(dag_run, task_instance)``."""

    def run() -> tuple[Any, Any]:
        dag_run = example_dag.test()
        by_id = {ti.task_id: ti for ti in dag_run.get_task_instances()}
        return dag_run, by_id[TASK_ID]

    return run


def states(dag_run: Any, task_instance: Any) -> tuple[str, str]:
    """The final states of the run and of its Flamingock task, as plain strings."""
    return str(dag_run.state), str(task_instance.state)


def gate_states(dag_run: Any) -> dict[str, str]:
    """The final states of the sensor and of the task it gates."""
    return {
        ti.task_id: str(ti.state)
        for ti in dag_run.get_task_instances()
        if ti.task_id in ("no_open_issues", "report")
    }


def test_example_dag_parses_with_the_operator_the_sensor_and_the_gated_task(
    example_dag: Any,
) -> None:
    """Airflow's DagBag loads the example DAG: operator >> issue sensor >> report."""
    from flamingock_provider.operators.flamingock import FlamingockOperator
    from flamingock_provider.sensors.issues import FlamingockIssueSensor

    kinds = {task.task_id: type(task) for task in example_dag.tasks}
    assert (FlamingockOperator, FlamingockIssueSensor) == (
        kinds[TASK_ID],
        kinds["no_open_issues"],
    )
    assert {"no_open_issues"} <= example_dag.get_task(TASK_ID).downstream_task_ids
    assert {"no_open_issues"} <= example_dag.get_task("report").upstream_task_ids


def test_first_run_applies_every_change(run_example: Callable[[], tuple[Any, Any]]) -> None:
    """The first run succeeds and applies the 4 changes, in stage order, exactly as written."""
    dag_run, task_instance = run_example()

    assert ("success", "success") == states(dag_run, task_instance)
    assert {"no_open_issues": "success", "report": "success"} == gate_states(dag_run)
    summary = task_instance.xcom_pull(task_ids=TASK_ID)
    assert ALL_CHANGES == summary["applied"]
    assert ([], []) == (summary["skipped"], summary["failed"])
    expected_stages = {"schema": ("COMPLETED", SCHEMA), "data": ("COMPLETED", DATA)}
    actual_stages = {k: (v["status"], v["applied"]) for k, v in summary["stages"].items()}
    assert expected_stages == actual_stages


def test_first_run_changes_the_shop_database(
    run_example: Callable[[], tuple[Any, Any]], shop_db: Any
) -> None:
    """The shop database gets the orders table, its 3 rows, the index and customer_totals."""
    run_example()

    assert {"orders", "customer_totals"} <= shop_db.tables()
    assert [(1, "ada"), (2, "grace"), (3, "ada")] == shop_db.query(
        "SELECT id, customer FROM orders ORDER BY id"
    )
    assert [("ix_orders_customer",)] == shop_db.query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders'"
    )
    assert [("ada", 5450), ("grace", 990)] == shop_db.query(
        "SELECT customer, total_cents FROM customer_totals ORDER BY customer"
    )


def test_first_run_audits_every_change(
    run_example: Callable[[], tuple[Any, Any]], audit_db: Any, shop_db: Any
) -> None:
    """Each change is recorded STARTED then APPLIED; no commit marker is left in the shop."""
    run_example()

    expected = {change_id: ["STARTED", "APPLIED"] for change_id in ALL_CHANGES}
    assert expected == audit_db.states()
    strategies = {e.change_id: e.tx_strategy.value for e in audit_db.history()}
    assert "NON_TX" == strategies["create-customer-totals"]
    assert "TX_SEPARATE_WITH_MARKER" == strategies["backfill-orders"]
    assert [] == shop_db.query('SELECT change_id FROM "flamingockMarker"')


def test_second_run_skips_every_change(
    run_example: Callable[[], tuple[Any, Any]], audit_db: Any
) -> None:
    """A second run succeeds, skips all 4 changes, takes no lock and writes no audit entry."""
    run_example()
    entries_after_first = len(audit_db.history())

    dag_run, task_instance = run_example()

    assert ("success", "success") == states(dag_run, task_instance)
    summary = task_instance.xcom_pull(task_ids=TASK_ID)
    assert (ALL_CHANGES, [], False) == (
        summary["skipped"],
        summary["applied"],
        summary["lock_taken"],
    )
    assert entries_after_first == len(audit_db.history())


def test_failing_change_fails_the_task(
    run_example: Callable[[], tuple[Any, Any]], audit_db: Any, shop_db: Any
) -> None:
    """A change that raises fails the task; its FAILED entry holds the error; nothing after runs.

    The shop already has an ``orders`` table, so ``CREATE TABLE orders`` fails.
    """
    shop_db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")

    dag_run, task_instance = run_example()

    assert ("failed", "failed") == states(dag_run, task_instance)
    assert {"no_open_issues": "upstream_failed", "report": "upstream_failed"} == gate_states(
        dag_run
    )
    assert {"create-orders-table": ["STARTED", "FAILED"]} == audit_db.states()
    (failed,) = [e for e in audit_db.history() if e.state.value == "FAILED"]
    assert "already exists" in (failed.error_trace or "")
    assert task_instance.xcom_pull(task_ids=TASK_ID) is None


def test_blocked_stage_fails_the_task(
    run_example: Callable[[], tuple[Any, Any]], audit_db: Any
) -> None:
    """A crashed NON_TX change blocks its stage: earlier stages run, the task then fails."""
    audit_db.record_crash("create-customer-totals", "data")

    dag_run, task_instance = run_example()

    assert ("failed", "failed") == states(dag_run, task_instance)
    expected = {
        **{change_id: ["STARTED", "APPLIED"] for change_id in SCHEMA},
        "create-customer-totals": ["STARTED"],
    }
    assert expected == audit_db.states()
