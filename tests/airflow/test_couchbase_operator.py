"""FlamingockOperator on a Couchbase audit store with `CouchbaseTargetSystem`, end to end.

Connections are ``AIRFLOW_CONN_*`` variables of conn type ``flamingock_couchbase``. On the fake
(``deployment`` parameter ``fake``) the one place that opens an SDK cluster,
``ClusterSettings.open``, returns a connection to an in-memory server, so the hook, the store, the
target and the operator run their real code; with ``FLAMINGOCK_TEST_COUCHBASE_CONNSTR`` set the
``real`` parameter runs the same tests on that cluster. Tests of commit failures the fake
simulates (ambiguous commit, write conflict) run on the fake only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import couchbase_servers
import pytest
from airflow.sdk.exceptions import AirflowException
from couchbase_servers import CouchbaseDeployment

from flamingock_provider.changes import Stage
from flamingock_provider.engine.lock import DEFAULT_KEY, utc_now
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.targets.couchbase import CouchbaseTargetSystem

AUDIT = "flamingock_couchbase"
TARGET = "flamingock_demo_inventory"
ITEMS = "scope.collection('items')"
SEED = f"transaction.insert({ITEMS}, 'item::1', {{'name': 'kettle'}})"


class World:
    """A deployment, its test scope (with collection ``items``) and the Airflow connections."""

    def __init__(self, deployment: CouchbaseDeployment, scope: str) -> None:
        self.deployment = deployment
        self.scope = scope

    @property
    def fake(self) -> Any:
        return self.deployment.server

    def store(self) -> Any:
        """The audit store, read directly (not through the operator)."""
        from flamingock_provider.stores.couchbase import CouchbaseAuditStore

        return CouchbaseAuditStore(
            self.deployment.cluster(), bucket=self.deployment.bucket, scope=self.scope
        )

    def states(self) -> dict[str, list[tuple[str, str]]]:
        """``{change_id: [(state, txStrategy), ...]}`` in the order written."""
        states: dict[str, list[tuple[str, str]]] = {}
        for entry in self.store().read_history():
            states.setdefault(entry.change_id, []).append(
                (entry.state.value, entry.tx_strategy.value)
            )
        return states

    def collection(self, name: str) -> Any:
        cluster = self.deployment.cluster()
        return cluster.bucket(self.deployment.bucket).scope(self.scope).collection(name)

    def item(self, key: str) -> Any:
        from couchbase.exceptions import DocumentNotFoundException

        try:
            return self.collection("items").get(key).content_as[dict]
        except DocumentNotFoundException:
            return None

    def separate_target(self) -> CouchbaseTargetSystem:
        """The same bucket through another connection: not shareable, so markers are used."""
        return CouchbaseTargetSystem(
            "inventory-db",
            cluster=self.deployment.connect(),
            bucket=self.deployment.bucket,
            scope=self.scope,
        )


@pytest.fixture(params=couchbase_servers.deployment_params())
def world(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    define_connection: Callable[..., None],
) -> Any:
    """Audit and target connections on one cluster, bucket and scope (so `TX_SHARED`)."""
    deployment = CouchbaseDeployment(real=request.param)
    if deployment.server is not None:
        from flamingock_provider.stores._couchbase_cluster import ClusterSettings

        server = deployment.server
        monkeypatch.setattr(ClusterSettings, "open", lambda self, timeout=None: server.connect())
    scope = deployment.create_scope(collections=("items",))
    define_connection(AUDIT, **deployment.connection(scope=scope))
    define_connection(TARGET, **deployment.connection(scope=scope))
    yield World(deployment, scope)
    deployment.close()


def _fake_only(world: World) -> None:
    if world.fake is None:
        pytest.skip("the fake simulates this failure; a real cluster cannot be made to")


def _operator(stages: Sequence[Stage], target: Any = None, **overrides: Any) -> FlamingockOperator:
    fields: dict[str, Any] = {
        "task_id": "apply_inventory",
        "audit_conn_id": AUDIT,
        "stages": stages,
        "target_systems": [target or CouchbaseTargetSystem("inventory-db", conn_id=TARGET)],
        "lock_retry": 0.05,
    }
    fields.update(overrides)
    return FlamingockOperator(**fields)


def _stage(packages: Any, *changes: dict[str, Any]) -> list[Stage]:
    return [packages.stage("inventory", list(changes))]


def _seed(**decorator: Any) -> dict[str, Any]:
    return {"id": "seed-items", "params": "transaction, scope", "body": SEED, **decorator}


def test_shared_bucket_runs_once_and_records_in_the_change_transaction(
    world: World, packages: Any
) -> None:
    """A NON_TX and a TX_SHARED change apply; a second run skips both without locking."""
    note = {
        "id": "write-note",
        "params": "scope",
        "body": f"{ITEMS}.upsert('note', {{'n': 1}})",
        "transactional": False,
    }
    stages = _stage(packages, note, _seed())

    first = _operator(stages).execute(context={})
    second = _operator(stages).execute(context={})

    assert (["write-note", "seed-items"], ["write-note", "seed-items"], False) == (
        first["applied"],
        second["skipped"],
        second["lock_taken"],
    )
    assert {
        "write-note": [("STARTED", "NON_TX"), ("APPLIED", "NON_TX")],
        "seed-items": [("STARTED", "TX_SHARED"), ("APPLIED", "TX_SHARED")],
    } == world.states()
    assert ({"n": 1}, {"name": "kettle"}) == (world.item("note"), world.item("item::1"))


def test_a_failing_transactional_change_leaves_nothing_and_runs_again(
    world: World, packages: Any, tmp_path: Path
) -> None:
    """The change's writes roll back with its transaction; FAILED is recorded, not an issue,
    and the next run applies it."""
    flag = tmp_path / "fail"
    flag.write_text("")
    body = f"{SEED}\n        if __import__('os').path.exists({str(flag)!r}): raise ValueError('no')"
    stages = _stage(packages, _seed(body=body))

    with pytest.raises(AirflowException, match="seed-items"):
        _operator(stages).execute(context={})
    after_failure = world.item("item::1")
    flag.unlink()
    again = _operator(stages).execute(context={})

    assert (None, ["seed-items"]) == (after_failure, again["applied"])
    assert [
        ("STARTED", "TX_SHARED"),
        ("FAILED", "TX_SHARED"),
        ("STARTED", "TX_SHARED"),
        ("APPLIED", "TX_SHARED"),
    ] == world.states()["seed-items"]


def test_another_connection_commits_a_marker_with_the_change_and_clears_it(
    world: World, packages: Any
) -> None:
    """TX_SEPARATE_WITH_MARKER: the marker collection is created, used, and left empty."""
    result = _operator(_stage(packages, _seed()), world.separate_target()).execute(context={})

    markers = world.collection("flamingockMarker")
    from couchbase.exceptions import DocumentNotFoundException

    from flamingock_provider.stores._couchbase_docs import marker_key

    with pytest.raises(DocumentNotFoundException):
        markers.get(marker_key("seed-items", result["execution_id"]))
    assert [("STARTED", "TX_SEPARATE_WITH_MARKER"), ("APPLIED", "TX_SEPARATE_WITH_MARKER")] == (
        world.states()["seed-items"]
    )


def test_an_ambiguous_commit_is_resolved_by_the_marker(world: World, packages: Any) -> None:
    """The transaction commits but the SDK reports an ambiguous outcome: the marker proves the
    commit, so APPLIED is recorded and the task succeeds."""
    _fake_only(world)
    world.fake.commit_ambiguously()

    result = _operator(_stage(packages, _seed()), world.separate_target()).execute(context={})

    assert (["seed-items"], {"name": "kettle"}) == (result["applied"], world.item("item::1"))
    assert ["STARTED", "APPLIED"] == [s for s, _ in world.states()["seed-items"]]


def test_an_ambiguous_shared_commit_is_resolved_by_the_audit_records(
    world: World, packages: Any
) -> None:
    """Under TX_SHARED the committed APPLIED record itself proves the commit."""
    _fake_only(world)
    world.fake.commit_ambiguously()

    result = _operator(_stage(packages, _seed())).execute(context={})

    assert (["seed-items"], [("STARTED", "TX_SHARED"), ("APPLIED", "TX_SHARED")]) == (
        result["applied"],
        world.states()["seed-items"],
    )


def test_a_retry_the_sdk_asks_for_is_refused_and_recorded_as_failed(
    world: World, packages: Any
) -> None:
    """A write conflict at commit makes the SDK call the logic again; the change cannot run
    twice in one attempt, so the transaction rolls back, FAILED is recorded (no issue) and the
    next run applies the change."""
    _fake_only(world)
    stages = _stage(packages, _seed())
    world.fake.conflict_next_commits()

    with pytest.raises(AirflowException, match="run the transaction again"):
        _operator(stages, world.separate_target()).execute(context={})
    after_failure = world.item("item::1")
    again = _operator(stages, world.separate_target()).execute(context={})

    assert (None, ["seed-items"]) == (after_failure, again["applied"])
    assert ["STARTED", "FAILED", "STARTED", "APPLIED"] == [
        s for s, _ in world.states()["seed-items"]
    ]


def test_a_held_lock_fails_the_task_naming_the_holder(world: World, packages: Any) -> None:
    """Another run holds the lock past ``lock_wait``: the task fails naming it."""
    store = world.store()
    store.initialize()
    now = utc_now()
    assert store.lock_acquire(DEFAULT_KEY, "other-run@host#1", now, now + timedelta(minutes=5))

    with pytest.raises(AirflowException, match="other-run@host#1"):
        _operator(_stage(packages, _seed()), lock_wait=0.3).execute(context={})


def test_the_password_never_appears_when_the_audit_bucket_is_missing(
    world: World, packages: Any, define_connection: Callable[..., None]
) -> None:
    """An audit store the cluster refuses fails the task without revealing the password."""
    fields = world.deployment.connection(bucket="no_such_bucket_xyz")
    define_connection(AUDIT, **fields)

    with pytest.raises(AirflowException) as raised:
        _operator(_stage(packages, _seed())).execute(context={})

    text = str(raised.value)
    assert (True, False) == ("no_such_bucket_xyz" in text, fields["password"] in text)


def test_the_example_dag_runs_on_couchbase(world: World, dags_folder: Path) -> None:
    """``dags/flamingock_couchbase_example.py``: create the collection, seed, convert prices."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder / "flamingock_couchbase_example.py"))
    assert {} == bag.import_errors
    task = bag.dags["flamingock_couchbase_example"].get_task("apply_inventory_changes")
    result = task.execute(context={})

    expected = ["create-items-collection", "seed-items", "price-in-cents"]
    assert (expected, 2450) == (result["applied"], world.item("item::1")["priceCents"])


def test_without_auto_create_a_missing_marker_collection_fails_before_any_change(
    world: World, packages: Any
) -> None:
    """``auto_create=False`` on the target: the task fails naming the marker collection, and
    nothing is recorded."""
    target = CouchbaseTargetSystem(
        "inventory-db",
        cluster=world.deployment.connect(),
        bucket=world.deployment.bucket,
        scope=world.scope,
        auto_create=False,
    )

    with pytest.raises(AirflowException, match=f"'{world.scope}.flamingockMarker'"):
        _operator(_stage(packages, _seed()), target).execute(context={})

    assert {} == world.states()


def test_a_non_transactional_change_gets_no_transaction(world: World, packages: Any) -> None:
    """``transaction`` is None outside a transaction; the other objects are the SDK's."""
    body = "assert transaction is None and scope.name == bucket.scope(scope.name).name"
    change = {
        "id": "look-around",
        "params": "transaction, scope, bucket, cluster",
        "body": body,
        "transactional": False,
    }

    result = _operator(_stage(packages, change)).execute(context={})

    assert ["look-around"] == result["applied"]
