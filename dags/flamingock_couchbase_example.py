"""Example: evolve a Couchbase inventory with audited change units, on a Couchbase audit store.

Connections (conn type ``flamingock_couchbase``, see docs/audit-stores/couchbase.md):

- ``flamingock_couchbase`` — the audit store: host = connection string, login, password, extra
  ``bucket`` (and optionally ``scope``, ``durability``);
- ``flamingock_demo_inventory`` — the bucket and scope the changes modify (extras ``bucket``,
  ``scope``).

The first change creates a collection (not transactional in Couchbase, so NON_TX); the others
run in Couchbase ACID transactions and receive the attempt context as ``transaction``. When both
connections name the same cluster, user and bucket, the audit records commit in the change's
transaction (TX_SHARED); otherwise a marker document does (TX_SEPARATE_WITH_MARKER). Only
key-value operations are used: the cluster needs no query service and no index.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from flamingock_provider.changes import Stage
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.sensors.issues import FlamingockIssueSensor
from flamingock_provider.targets.couchbase import CouchbaseTargetSystem

with DAG(
    dag_id="flamingock_couchbase_example",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["flamingock", "example", "couchbase"],
    doc_md=__doc__,
):
    apply = FlamingockOperator(
        task_id="apply_inventory_changes",
        audit_conn_id="flamingock_couchbase",
        stages=[Stage("inventory", "example_changes.inventory")],
        target_systems=[CouchbaseTargetSystem("inventory-db", conn_id="flamingock_demo_inventory")],
    )
    no_issues = FlamingockIssueSensor(
        task_id="no_open_issues",
        audit_conn_id="flamingock_couchbase",
        mode="reschedule",
        poke_interval=60,
        timeout=3600,
    )
    apply >> no_issues
