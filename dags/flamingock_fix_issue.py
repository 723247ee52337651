"""Resolve a Flamingock issue from the Airflow UI: trigger with the change id and resolution.

APPLIED: you checked the target system and the change is fully in place; it is never run again.
ROLLED_BACK: the change is not in place (undo any partial effects first); the next run applies it.
The entry records the user who triggered this run as its author.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from flamingock_provider.operators.fix import FlamingockFixIssueOperator

with DAG(
    dag_id="flamingock_fix_issue",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["flamingock"],
    doc_md=__doc__,
    params={
        "audit_conn_id": Param("flamingock_default", type="string", minLength=1),
        "change_id": Param("", type="string", description="id of the change with an issue"),
        "resolution": Param("APPLIED", type="string", enum=["APPLIED", "ROLLED_BACK"]),
    },
):
    FlamingockFixIssueOperator(
        task_id="fix_issue",
        audit_conn_id="{{ params.audit_conn_id }}",
        change_id="{{ params.change_id }}",
        resolution="{{ params.resolution }}",
    )
