"""FlamingockOperator on a MongoDB audit store with MongoDB target systems, end to end.

Every test runs on mongomock-ng (``mongomock``) and, when ``FLAMINGOCK_TEST_MONGODB_URI`` is set,
on that server too (``real``): the same test, another parameter. Connections are
``AIRFLOW_CONN_*`` variables; on mongomock-ng ``pymongo.MongoClient`` is replaced by
`mongodb_servers.FakeMongo`, so the hooks build their clients exactly as in production.

What only the real server can show is marked so: isolation of an open transaction, and runners
racing from separate processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mongodb_servers
import pytest
from airflow.sdk.exceptions import AirflowException

from flamingock_provider.changes import Stage
from flamingock_provider.engine.model import AuditEntry
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.targets.mongodb import MongoDBTargetSystem

AUDIT = "flamingock_default"
CATALOG = "catalog"
TARGET = "catalog-db"
SAME, OTHER, STANDALONE = "same", "other", "standalone"
"""Where the target lives: the audit store's deployment and user, another one, a standalone."""


@dataclass
class MongoWorld:
    """One test's MongoDB deployments, reached through Airflow connections."""

    kind: str
    database: str
    tmp_path: Path
    clients: list[Any] = field(default_factory=list)
    uri: str | None = None
    fake: Any = None

    def client(self, where: str = SAME) -> Any:
        """A client on the deployment ``where`` (for reading back what happened)."""
        if self.kind == "real":
            client = mongodb_servers.real_client()
        else:
            client = self.fake.clusters[_FAKE_HOSTS[where]].client()
        self.clients.append(client)
        return client

    def db(self, where: str = SAME) -> Any:
        return self.client(where)[self.database]

    def history(self, change_id: str | None = None) -> list[AuditEntry]:
        from flamingock_provider.stores.mongodb import MongoAuditStore

        store = MongoAuditStore(self.client(), self.database)
        return [e for e in store.read_history() if change_id in (None, e.change_id)]

    def states(self, change_id: str | None = None) -> list[tuple[str, str]]:
        return [(e.state.value, e.tx_strategy.value) for e in self.history(change_id)]

    def docs(self, collection: str, where: str = SAME) -> list[dict[str, Any]]:
        return list(self.db(where)[collection].find({}, {"_id": 0}))


_FAKE_HOSTS = {
    SAME: "mongo-a.test:27017",
    OTHER: "mongo-b.test:27017",
    STANDALONE: "mongo-s.test:27017",
}


def _params() -> list[Any]:
    params = [pytest.param("mongomock", id="mongomock")]
    if mongodb_servers.real_uri():
        params.append(pytest.param("real", id="real", marks=pytest.mark.servers))
    return params


@pytest.fixture(params=_params())
def mongo(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    define_connection: Callable[..., None],
    tmp_path: Path,
) -> Iterator[MongoWorld]:
    """Connections ``flamingock_default`` (audit) and ``catalog_<where>`` (targets)."""
    if request.param == "mongomock":
        world = MongoWorld("mongomock", "flamingock", tmp_path)
        world.fake = mongodb_servers.patch_pymongo(monkeypatch)
        world.fake.add("mongo-a.test")
        world.fake.add("mongo-b.test")
        world.fake.add("mongo-s.test", replica_set=None)
        for where, address in [(AUDIT, _FAKE_HOSTS[SAME])] + [
            (f"{CATALOG}_{w}", a) for w, a in _FAKE_HOSTS.items()
        ]:
            host, port = address.split(":")
            define_connection(
                where,
                conn_type="flamingock_mongodb",
                host=host,
                port=int(port),
                login="airflow",
                password="S3cret",
                schema=world.database,
            )
    else:
        uri = mongodb_servers.real_uri()
        assert uri is not None
        world = MongoWorld("real", mongodb_servers.unique_database(), tmp_path, uri=uri)
        fields = mongodb_servers.connection_fields(uri, world.database)
        define_connection(AUDIT, **fields)
        define_connection(f"{CATALOG}_{SAME}", **fields)
        other = _respelled(fields)
        if other is not None:
            define_connection(f"{CATALOG}_{OTHER}", **other)
    try:
        yield world
    finally:
        if world.kind == "real":
            world.client().drop_database(world.database)
        for client in world.clients:
            client.close()


def _respelled(fields: dict[str, Any]) -> dict[str, Any] | None:
    """The same real server under another host spelling: a different deployment to the hook."""
    swap = {"localhost": "127.0.0.1", "127.0.0.1": "localhost"}
    host, _, port = fields["host"].partition(":")
    if fields["extra"].get("srv") or "," in fields["host"] or host not in swap:
        return None
    return {**fields, "host": f"{swap[host]}:{port}" if port else swap[host]}


def _require_target(mongo: MongoWorld, where: str) -> None:
    if (
        mongo.kind == "real"
        and where == OTHER
        and not os.environ.get(f"AIRFLOW_CONN_{CATALOG.upper()}_{OTHER.upper()}")
    ):
        pytest.skip("the real server's URI names no localhost/127.0.0.1 host to respell")
    if mongo.kind == "real" and where == STANDALONE:
        pytest.skip("the real server is a replica set; a standalone one is on mongomock only")


def _operator(stages: Sequence[Stage], where: str = SAME, **options: Any) -> FlamingockOperator:
    target = MongoDBTargetSystem(TARGET, conn_id=f"{CATALOG}_{where}")
    return FlamingockOperator(
        task_id="apply_changes", stages=stages, target_systems=[target], **options
    )


def _change(id: str, body: str, params: str = "db, session", **decorator: Any) -> dict[str, Any]:
    return {"id": id, "body": body, "params": params, "target_system": TARGET, **decorator}


INSERT = "db.items.insert_one({{'id': {n!r}}}, session=session)"
FAIL_WHILE_FLAGGED = (
    "\n        if __import__('os').path.exists({flag!r}): raise RuntimeError('boom')"
)


# -- write sequences -------------------------------------------------------------------------


@pytest.mark.parametrize("where", [SAME, OTHER])
def test_apply_then_rerun_skips_everything_without_the_lock(
    mongo: MongoWorld, packages: Any, where: str
) -> None:
    """First run applies each change once; the second skips them all and takes no lock."""
    _require_target(mongo, where)
    stage = packages.stage("c", [_change(f"add-{n}", INSERT.format(n=n)) for n in (1, 2)])

    first = _operator([stage], where).execute(context={})
    second = _operator([stage], where).execute(context={})

    assert (["add-1", "add-2"], True) == (first["applied"], first["lock_taken"])
    assert (["add-1", "add-2"], [], False) == (
        second["skipped"],
        second["applied"],
        second["lock_taken"],
    )
    assert [{"id": 1}, {"id": 2}] == mongo.docs("items", where)


def test_same_deployment_is_tx_shared_with_started_inside_the_transaction(
    mongo: MongoWorld, packages: Any
) -> None:
    """Target = audit deployment and user: TX_SHARED; the change's session sees its STARTED."""
    count = (
        "db.seen.insert_one({'started': len(list(db['flamingockAuditLog'].find("
        "{'changeId': 'probe', 'state': 'STARTED'}, session=session)))}, session=session)"
    )
    stage = packages.stage("c", [_change("probe", count)])

    _operator([stage]).execute(context={})

    assert [("STARTED", "TX_SHARED"), ("APPLIED", "TX_SHARED")] == mongo.states()
    assert [{"started": 1}] == mongo.docs("seen")


@pytest.mark.parametrize("where", [SAME, OTHER])
def test_transactional_failure_leaves_nothing_and_is_applied_next_run(
    mongo: MongoWorld, packages: Any, where: str
) -> None:
    """A change that raises after writing leaves no document, FAILED, and runs again next time."""
    _require_target(mongo, where)
    flag = mongo.tmp_path / "fail"
    flag.touch()
    body = INSERT.format(n=1) + FAIL_WHILE_FLAGGED.format(flag=str(flag))
    stage = packages.stage("c", [_change("add-1", body)])

    with pytest.raises(AirflowException) as caught:
        _operator([stage], where).execute(context={})
    after_failure = (mongo.docs("items", where), mongo.history())
    flag.unlink()
    retry = _operator([stage], where).execute(context={})

    strategy = "TX_SHARED" if where == SAME else "TX_SEPARATE_WITH_MARKER"
    assert ("add-1" in str(caught.value), "boom" in str(caught.value)) == (True, True)
    assert [] == after_failure[0]
    assert [("STARTED", strategy), ("FAILED", strategy)] == [
        (e.state.value, e.tx_strategy.value) for e in after_failure[1]
    ]
    assert (["add-1"], [{"id": 1}]) == (retry["applied"], mongo.docs("items", where))


def test_other_deployment_commits_a_marker_that_is_then_cleared(
    mongo: MongoWorld, packages: Any
) -> None:
    """Target elsewhere: TX_SEPARATE_WITH_MARKER; the marker collection is empty afterwards."""
    _require_target(mongo, OTHER)
    stage = packages.stage("c", [_change("add-1", INSERT.format(n=1))])

    _operator([stage], OTHER).execute(context={})

    strategy = "TX_SEPARATE_WITH_MARKER"
    assert [("STARTED", strategy), ("APPLIED", strategy)] == mongo.states()
    assert ([{"id": 1}], []) == (mongo.docs("items", OTHER), mongo.docs("flamingockMarker", OTHER))


def test_non_transactional_change_is_non_tx_with_no_session(
    mongo: MongoWorld, packages: Any
) -> None:
    """``transactional=False``: NON_TX, and ``session`` is injected as None."""
    body = "db.items.insert_one({'session_was_none': session is None}, session=session)"
    stage = packages.stage("c", [_change("plain", body, transactional=False)])

    _operator([stage]).execute(context={})

    assert [("STARTED", "NON_TX"), ("APPLIED", "NON_TX")] == mongo.states()
    assert [{"session_was_none": True}] == mongo.docs("items")


# -- refused before anything runs ------------------------------------------------------------


def test_transactional_change_on_a_standalone_server_is_refused_before_it_runs(
    mongo: MongoWorld, packages: Any
) -> None:
    """A standalone server has no transactions: the task fails naming why; nothing is written."""
    _require_target(mongo, STANDALONE)
    stage = packages.stage("c", [_change("add-1", INSERT.format(n=1))])

    with pytest.raises(AirflowException) as caught:
        _operator([stage], STANDALONE).execute(context={})

    message = str(caught.value)
    assert (True, True, True) == (
        TARGET in message,
        "standalone" in message,
        "transactional=False" in message,
    )
    assert ([], []) == (mongo.history(), mongo.docs("items", STANDALONE))


def test_without_auto_create_missing_collections_fail_the_task_by_name(
    mongo: MongoWorld, packages: Any, define_connection: Callable[..., None]
) -> None:
    """``auto_create=false`` creates nothing and names the missing collection and the fix."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(AUDIT)
    fields = json.loads(conn.as_json())
    fields["extra"] = {**json.loads(fields.get("extra") or "{}"), "auto_create": "false"}
    define_connection(AUDIT, **fields)
    stage = packages.stage("c", [_change("add-1", INSERT.format(n=1))])

    with pytest.raises(AirflowException) as caught:
        _operator([stage]).execute(context={})

    message = str(caught.value)
    assert (True, True, True) == (
        "'flamingockAuditLog' does not exist" in message,
        "auto_create" in message,
        "createIndex" in message,
    )
    assert [] == mongo.db().list_collection_names()


# -- only a real server can show these --------------------------------------------------------


def test_an_open_transaction_is_invisible_to_other_readers(
    mongo: MongoWorld, packages: Any
) -> None:
    """While a TX_SHARED change runs, another client sees neither its STARTED nor its writes."""
    if mongo.kind != "real":
        pytest.skip("mongomock-ng has no isolation: uncommitted writes are visible to all")
    outside = (
        f"c = __import__('pymongo').MongoClient({mongo.uri!r})[{mongo.database!r}]; "
        "db.seen.insert_one({'started': c['flamingockAuditLog'].count_documents("
        "{'state': 'STARTED'}), 'items': c['items'].count_documents({})}, session=session)"
    )
    stage = packages.stage("c", [_change("probe", INSERT.format(n=1) + "; " + outside)])

    _operator([stage]).execute(context={})

    assert [{"started": 0, "items": 0}] == mongo.docs("seen")


WORKER = """
import json, sys
sys.path.insert(0, {root!r})
from flamingock_provider.changes import Stage
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.targets.mongodb import MongoDBTargetSystem
op = FlamingockOperator(
    task_id="race", stages=[Stage("c", {package!r})], lock_retry=0.05,
    target_systems=[MongoDBTargetSystem({target!r}, conn_id={conn!r})],
)
print(json.dumps(op.execute(context={{}})))
"""


def test_racing_processes_apply_each_change_exactly_once(mongo: MongoWorld, packages: Any) -> None:
    """Four processes run the same pipeline at once: each change runs once; all succeed."""
    if mongo.kind != "real":
        pytest.skip("mongomock-ng lives in one process; the race needs a real server")
    ids = [f"add-{n}" for n in range(1, 9)]
    sleep = "; __import__('time').sleep(0.05)"
    stage = packages.stage("c", [_change(i, INSERT.format(n=i) + sleep) for i in ids])
    script = textwrap.dedent(
        WORKER.format(
            root=str(packages.root), package=stage.package, target=TARGET, conn=f"{CATALOG}_{SAME}"
        )
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]

    assert [0, 0, 0, 0] == [p.returncode for p in procs], outputs
    applied = Counter(i for out, _ in outputs for i in json.loads(out.splitlines()[-1])["applied"])
    assert dict.fromkeys(ids, 1) == dict(applied)
    assert sorted(ids) == sorted(d["id"] for d in mongo.docs("items"))


# -- the example DAG ---------------------------------------------------------------------------


def test_example_dag_runs_on_a_mongodb_audit_store(
    mongo: MongoWorld,
    airflow_db: Path,
    dags_folder: Path,
    define_connection: Callable[..., None],
) -> None:
    """``dags/flamingock_mongodb_example.py`` under ``dag.test()``: the catalog gets its three
    products with a currency, each change recorded TX_SHARED or NON_TX, and the gate passes."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook

    for conn_id in ("flamingock_mongodb", "flamingock_demo_catalog"):
        define_connection(conn_id, **json.loads(BaseHook.get_connection(AUDIT).as_json()))
    bag = DagBag(dag_folder=str(dags_folder / "flamingock_mongodb_example.py"))
    assert {} == bag.import_errors

    dag_run = bag.get_dag("flamingock_mongodb_example").test()

    assert "success" == str(dag_run.state)
    assert [("EUR", "TEA-001"), ("EUR", "TEA-002"), ("EUR", "CUP-001")] == [
        (d["currency"], d["sku"]) for d in mongo.docs("products")
    ]
    assert {"NON_TX", "TX_SHARED"} == {strategy for _, strategy in mongo.states()}
