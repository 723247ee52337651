"""The example DAG under a real ``dag.test()`` against Airflow's (SQLite) metadata database.

``dags/flamingock_example.py`` evolves a shop database in two stages (schema: orders table and
index; data: backfill and a non-transactional summary table). Its two connections are injected
as ``AIRFLOW_CONN_*`` variables pointing at SQLite files of the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DAG_ID = "flamingock_example"
TASK_ID = "apply_changes"
SCHEMA = ["create-orders-table", "index-orders-by-customer"]
DATA = ["backfill-orders", "create-customer-totals"]
ALL_CHANGES = SCHEMA + DATA


@pytest.fixture(scope="module")
def example_dag(airflow_db: Path) -> Any:
    """The example DAG, parsed by Airflow's own DagBag from the dags folder."""
    from airflow.dag_processing.dagbag import DagBag

    from tests_paths import DAGS_FOLDER

    bag = DagBag(dag_folder=str(DAGS_FOLDER / "flamingock_example.py"))
    assert {} == bag.import_errors
    return bag.get_dag(DAG_ID)


@pytest.fixture
def run_example(example_dag: Any, audit_db: Any, shop_db: Any) -> Any:
    """Run the example DAG once with ``dag.test()``; return ``(dag_run, task_instance)``."""

    def run() -> tuple[Any, Any]:
        dag_run = example_dag.test()
        (task_instance,) = dag_run.get_task_instances()
        return dag_run, task_instance

    return run


def xcom_of(task_instance: Any) -> Any:
    """The return value the task pushed (None when it pushed nothing)."""
    return task_instance.xcom_pull(task_ids=TASK_ID)
