"""Example: evolve a DynamoDB product catalog with audited change units.

Connection ``flamingock_dynamodb`` (conn type ``flamingock_dynamodb``, see
docs/audit-stores/dynamodb.md) holds the audit store; the target system uses the same
connection, so each transactional change commits its writes together with its STARTED and
APPLIED audit records in one ``TransactWriteItems`` (TX_SHARED).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from flamingock_provider.changes import Stage
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.sensors.issues import FlamingockIssueSensor
from flamingock_provider.targets import DynamoDBTargetSystem

with DAG(
    dag_id="flamingock_dynamodb_example",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["flamingock", "example", "dynamodb"],
    doc_md=__doc__,
):
    apply_changes = FlamingockOperator(
        task_id="apply_changes",
        audit_conn_id="flamingock_dynamodb",
        stages=[Stage("catalog", "example_changes.dynamodb_catalog")],
        target_systems=[DynamoDBTargetSystem("catalog-db", conn_id="flamingock_dynamodb")],
    )
    no_open_issues = FlamingockIssueSensor(
        task_id="no_open_issues",
        audit_conn_id="flamingock_dynamodb",
        mode="reschedule",
        poke_interval=60,
        timeout=3600,
    )
    apply_changes >> no_open_issues
