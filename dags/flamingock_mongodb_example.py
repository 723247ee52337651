"""Example: evolve a MongoDB product catalog with audited change units, on a MongoDB audit store.

Connections (conn type ``flamingock_mongodb``, see docs/audit-stores/mongodb.md):

- ``flamingock_mongodb`` — the audit store: host, port, login, password, schema (database);
- ``flamingock_demo_catalog`` — the catalog database the changes modify.

When both name the same deployment and user, transactional changes commit together with their
``STARTED``/``APPLIED`` records (TX_SHARED); otherwise each commits a marker document with its
work (TX_SEPARATE_WITH_MARKER). Either way a worker killed mid-change leaves no issue behind.
Transactions need a replica set (one member is enough) or a sharded cluster.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from flamingock_provider.changes import Stage
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.sensors.issues import FlamingockIssueSensor
from flamingock_provider.targets.mongodb import MongoDBTargetSystem

with DAG(
    dag_id="flamingock_mongodb_example",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["flamingock", "example", "mongodb"],
    doc_md=__doc__,
):
    apply = FlamingockOperator(
        task_id="apply_catalog_changes",
        audit_conn_id="flamingock_mongodb",
        stages=[Stage("catalog", "example_changes.mongodb_catalog")],
        target_systems=[MongoDBTargetSystem("catalog-db", conn_id="flamingock_demo_catalog")],
    )
    no_issues = FlamingockIssueSensor(
        task_id="no_open_issues",
        audit_conn_id="flamingock_mongodb",
        mode="reschedule",
        poke_interval=60,
        timeout=3600,
    )
    apply >> no_issues
