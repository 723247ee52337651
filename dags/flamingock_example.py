"""Example: evolve a shop database with audited change units, then gate downstream work.

``apply_changes`` runs the pending change units; ``no_open_issues`` holds the report until no
change needs a person; ``report`` stands for the work that needs the new schema.

Connections (see README): ``flamingock_default`` (the audit store, conn type
``flamingock_sql``) and ``flamingock_demo_shop`` (the shop database the changes modify).
The shop is a different database from the audit store, so each transactional change commits
a marker with its work (TX_SEPARATE_WITH_MARKER).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from flamingock_provider.changes import Stage
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.sensors.issues import FlamingockIssueSensor
from flamingock_provider.targets import SqlTargetSystem

with DAG(
    dag_id="flamingock_example",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["flamingock", "example"],
    doc_md=__doc__,
):
    apply_changes = FlamingockOperator(
        task_id="apply_changes",
        audit_conn_id="flamingock_default",
        stages=[
            Stage("schema", "example_changes.schema"),
            Stage("data", "example_changes.data"),
        ],
        target_systems=[SqlTargetSystem("shop-db", conn_id="flamingock_demo_shop")],
    )
    no_open_issues = FlamingockIssueSensor(
        task_id="no_open_issues",
        audit_conn_id="flamingock_default",
        mode="reschedule",
        poke_interval=60,
        timeout=3600,
    )

    @task
    def report(summary: dict) -> None:
        """Downstream work: runs only once the changes are in and no issue is open."""
        print(f"schema ready: applied {summary['applied']}, skipped {summary['skipped']}")

    apply_changes >> no_open_issues >> report(apply_changes.output)
