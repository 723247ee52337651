"""The Couchbase audit store beyond the shared contract: layout, cost, durability, races, no query.

Each test runs on the in-memory SDK fake and, when ``FLAMINGOCK_TEST_COUCHBASE_CONNSTR`` is set,
on that real cluster too (``deployment`` parameter ``real``). Tests that count operations or
read the durability a write carried use what only the fake records, and say so.
"""

from __future__ import annotations

import ast
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import couchbase_servers
import pytest
from couchbase_servers import CouchbaseDeployment

from flamingock_provider.changes import Stage
from flamingock_provider.engine.discovery import load_pipeline
from flamingock_provider.engine.errors import AuditStoreError, ValidationError
from flamingock_provider.engine.lock import DEFAULT_KEY
from flamingock_provider.engine.model import AuditEntry, AuditState, TxStrategy
from flamingock_provider.engine.runner import PipelineRunner
from flamingock_provider.stores.couchbase import CouchbaseAuditStore
from flamingock_provider.testing import MemoryTargetSystem

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
ALICE = "alice@host-a#1"
BOB = "bob@host-b#2"
PACKAGE = Path(__file__).resolve().parents[2] / "flamingock_provider"
QUERY_API = {"query", "analytics_query", "search_query", "search", "query_indexes"}
WRITES = {"insert", "upsert", "replace", "remove", "mutate_in"}


@pytest.fixture(params=couchbase_servers.deployment_params())
def deployment(request: pytest.FixtureRequest) -> Any:
    """The fake (a fresh server) or the real cluster; the test's scopes are dropped after it."""
    deployment = CouchbaseDeployment(real=request.param)
    yield deployment
    deployment.close()


@pytest.fixture
def fake() -> Any:
    """The fake only: for what a real cluster does not report (operations, durability)."""
    deployment = CouchbaseDeployment(real=False)
    yield deployment
    deployment.close()


def _store(deployment: CouchbaseDeployment, scope: str, **options: Any) -> CouchbaseAuditStore:
    options.setdefault("durability", deployment.durability)
    return CouchbaseAuditStore(
        options.pop("cluster", None) or deployment.cluster(),
        bucket=deployment.bucket,
        scope=scope,
        **options,
    )


def _ready(deployment: CouchbaseDeployment, **options: Any) -> CouchbaseAuditStore:
    store = _store(deployment, deployment.new_scope(), **options)
    store.initialize()
    return store


def _entry(**overrides: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "execution_id": "exec-1",
        "change_id": "change-a",
        "state": AuditState.APPLIED,
        "created_at": T0,
        "stage_id": "stage-1",
        "tx_strategy": TxStrategy.TX_SEPARATE_WITH_MARKER,
    }
    fields.update(overrides)
    return AuditEntry(**fields)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _counted(operations: list[Any]) -> dict[str, int]:
    return dict(Counter(op.name for op in operations))


# -- no query, no index --------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "stores/couchbase.py",
        "stores/_couchbase_docs.py",
        "stores/_couchbase_cluster.py",
        "targets/couchbase.py",
        "hooks/couchbase.py",
    ],
)
def test_the_couchbase_modules_never_name_a_query_api(module: str) -> None:
    """No SQL++, analytics or search call and no query option appears in the source at all."""
    tree = ast.parse((PACKAGE / module).read_text())
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    imported = {
        alias.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        for alias in n.names
        if "Query" in alias.name or (n.module or "").endswith(("n1ql", "analytics", "search"))
    }

    assert (set(), set()) == (attributes & QUERY_API, imported)


class _NoQueryCluster:
    """A cluster proxy that fails the test on any query, analytics or search call."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster

    def __getattr__(self, name: str) -> Any:
        if name in QUERY_API:
            raise AssertionError(f"the store called cluster.{name}")
        return getattr(self._cluster, name)


def test_a_whole_run_sends_no_query(deployment: CouchbaseDeployment, tmp_path: Path) -> None:
    """Initialise, lock, apply, re-plan, list history: all on a cluster that refuses queries."""
    package = tmp_path / "cb_noquery_changes"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for order, change_id in enumerate(["first", "second"], start=1):
        (package / f"_{order:04d}__c.py").write_text(
            "from flamingock_provider.changes import change\n\n"
            f"@change(id={change_id!r}, target_system='mem')\n"
            "class C:\n    def apply(self, data):\n"
            f"        data[{change_id!r}] = True\n"
        )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        store = _store(
            deployment, deployment.new_scope(), cluster=_NoQueryCluster(deployment.cluster())
        )
        target = MemoryTargetSystem("mem")
        pipeline = load_pipeline(
            [Stage("s", "cb_noquery_changes")], {"mem": target.injectable_names()}
        )
        first = PipelineRunner(store, pipeline, [target], heartbeat=False).run()
        second = PipelineRunner(store, pipeline, [target], heartbeat=False).run()
        history = store.read_history()
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("cb_noquery_changes")]:
            del sys.modules[name]

    assert (["first", "second"], ["first", "second"], 4) == (
        list(first.applied),
        list(second.skipped),
        len(history),
    )


# -- cost in key-value operations (the fake counts them) ----------------------------------


def test_an_audit_write_is_four_key_value_operations(fake: CouchbaseDeployment) -> None:
    """insert entry, append to the index, read the latest slot, write it (CAS): 4 operations;
    an entry older than the latest one skips the last write."""
    store = _ready(fake)
    costs = {}
    for label, entry in [
        ("first", _entry(state=AuditState.STARTED, created_at=_at(0))),
        ("newer", _entry(state=AuditState.APPLIED, created_at=_at(1))),
        ("older", _entry(execution_id="exec-0", state=AuditState.STARTED, created_at=_at(-1))),
    ]:
        with fake.server.recording() as seen:
            store.append(entry)
        costs[label] = [op.name for op in seen]

    assert {
        "first": ["insert", "mutate_in", "lookup_in", "insert"],
        "newer": ["insert", "mutate_in", "lookup_in", "mutate_in"],
        "older": ["insert", "mutate_in", "lookup_in"],
    } == costs


def test_reading_the_latest_entries_is_one_get_however_long_the_history(
    fake: CouchbaseDeployment,
) -> None:
    """`read_latest` is one ``get`` of the ``latest`` document, for 3 or 30 entries."""
    store = _ready(fake)
    costs = []
    for rounds in (1, 10):
        for i in range(rounds * 3):
            store.append(_entry(execution_id=f"e{rounds}-{i}", change_id=f"c{i % 3}"))
        with fake.server.recording() as seen:
            latest = store.read_latest()
        costs.append((len(latest), [op.name for op in seen]))

    assert [(3, ["get"]), (3, ["get"])] == costs


def test_listing_history_is_three_round_trips_and_since_fetches_only_newer_entries(
    fake: CouchbaseDeployment,
) -> None:
    """``latest``, then the change indexes, then the entries; ``since`` skips older entries."""
    store = _ready(fake)
    for i in range(6):
        store.append(_entry(execution_id=f"e{i}", change_id=f"c{i % 2}", created_at=_at(i)))

    with fake.server.recording() as everything:
        store.read_history()
    with fake.server.recording() as recent:
        newer = store.read_history(since=_at(4))

    assert {"get": 1, "get_multi": 2 + 6} == _counted(everything)
    assert ({"get": 1, "get_multi": 2 + 2}, 2) == (_counted(recent), len(newer))


def test_lock_calls_are_one_checked_write_each_when_uncontended(fake: CouchbaseDeployment) -> None:
    """acquire: ``insert``; extend and release: a CAS write with the CAS of our last write.
    Refused: ``insert`` + ``get``; taking over an expired lease: + a CAS ``replace``."""
    store, other = _ready(fake), _store(fake, "unused")
    other.handle, other.scope_name = store.handle, store.scope_name
    steps = [
        ("acquire", lambda: store.lock_acquire(DEFAULT_KEY, ALICE, T0, _at(60))),
        ("extend", lambda: store.lock_extend(DEFAULT_KEY, ALICE, _at(1), _at(61))),
        ("refused", lambda: other.lock_acquire(DEFAULT_KEY, BOB, _at(2), _at(62))),
        ("takeover", lambda: other.lock_acquire(DEFAULT_KEY, BOB, _at(70), _at(130))),
        ("release", lambda: other.lock_release(DEFAULT_KEY, BOB)),
    ]
    costs = {}
    for label, step in steps:
        with fake.server.recording() as seen:
            step()
        costs[label] = [op.name for op in seen]

    assert {
        "acquire": ["insert"],
        "extend": ["replace"],
        "refused": ["insert", "get"],
        "takeover": ["insert", "get", "replace"],
        "release": ["remove"],
    } == costs


# -- durability ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("durability", "level"),
    [
        ("none", None),
        ("majority", "MAJORITY"),
        ("majority_and_persist_active", "MAJORITY_AND_PERSIST_TO_ACTIVE"),
        ("persist_to_majority", "PERSIST_TO_MAJORITY"),
    ],
)
def test_every_audit_and_lock_write_carries_the_durability(
    fake: CouchbaseDeployment, durability: str, level: str | None
) -> None:
    """Each insert, replace, remove and mutate_in of the store asks for the configured level."""
    store = _ready(fake, durability=durability)
    with fake.server.recording() as seen:
        store.append(_entry(state=AuditState.STARTED))
        store.append(_entry(state=AuditState.APPLIED, created_at=_at(1)))
        store.lock_acquire(DEFAULT_KEY, ALICE, T0, _at(60))
        store.lock_extend(DEFAULT_KEY, ALICE, T0, _at(61))
        store.lock_release(DEFAULT_KEY, ALICE)

    writes = [op for op in seen if op.name in WRITES]
    assert (9, {level}) == (len(writes), {op.durability for op in writes})


def test_an_unknown_durability_is_refused_naming_the_levels(fake: CouchbaseDeployment) -> None:
    """A typo in the durability is a `ValidationError` before anything is written."""
    with pytest.raises(ValidationError, match="majority_and_persist_active"):
        _store(fake, "s", durability="quorum")


# -- scope and collections -----------------------------------------------------------------


@pytest.mark.parametrize("present", ["nothing", "scope", "audit-collection"])
def test_without_auto_create_what_is_missing_is_named_and_nothing_is_created(
    deployment: CouchbaseDeployment, present: str
) -> None:
    """``auto_create=False`` validates: the message names each missing scope or collection."""
    scope = deployment.new_scope()
    if present != "nothing":
        collections = ("flamingockAuditLog",) if present == "audit-collection" else ()
        deployment.create_scope(scope, collections)
    store = _store(deployment, scope, auto_create=False)

    with pytest.raises(AuditStoreError) as caught:
        store.initialize()

    message = str(caught.value).removeprefix(store.description)  # it names the collections
    named = [
        n for n in (f"scope '{scope}'", "flamingockAuditLog", "flamingockLock") if n in message
    ]
    expected = {
        "nothing": [f"scope '{scope}'", "flamingockAuditLog", "flamingockLock"],
        "scope": ["flamingockAuditLog", "flamingockLock"],
        "audit-collection": ["flamingockLock"],
    }[present]
    assert (expected, False) == (named, store.is_initialized())


def test_auto_create_in_the_default_scope_creates_only_the_collections(
    fake: CouchbaseDeployment,
) -> None:
    """In ``_default`` no scope is created; a second store finds everything and creates nothing."""
    store = _store(fake, "_default", audit_collection="auditX", lock_collection="lockX")
    with fake.server.recording() as first:
        store.initialize()
    second = _store(fake, "_default", audit_collection="auditX", lock_collection="lockX")
    with fake.server.recording() as again:
        second.initialize()

    created = [(op.name, op.keyspace) for op in first if op.name.startswith("create")]
    assert [
        ("create_collection", "flamingock._default.auditX"),
        ("create_collection", "flamingock._default.lockX"),
    ] == created
    assert ["get_all_scopes"] == [op.name for op in again]


# -- layout ------------------------------------------------------------------------------


def test_documents_have_the_documented_keys_and_flamingock_field_names(
    deployment: CouchbaseDeployment,
) -> None:
    """``latest``, ``change::<id>`` and ``entry::<sha256>`` in the audit collection,
    ``lock::<key>`` in the lock collection; camelCase fields, epoch-millisecond times."""
    store = _ready(deployment)
    entry = _entry()
    store.append(entry)
    store.lock_acquire(DEFAULT_KEY, ALICE, T0, _at(60))

    latest = store.audit.get("latest").content_as[dict]
    index = store.audit.get("change::change-a").content_as[dict]
    (entry_key, micros) = index["entries"][0]
    stored = store.audit.get(entry_key).content_as[dict]
    lock = store.lock.get(f"lock::{DEFAULT_KEY}").content_as[dict]

    millis = int(T0.timestamp() * 1000)
    assert stored == latest["changes"]["change-a"]
    assert (True, micros) == (entry_key.startswith("entry::"), stored["createdAtMicros"])
    assert ("exec-1", "APPLIED", millis, "TX_SEPARATE_WITH_MARKER", "stage-1") == (
        stored["executionId"],
        stored["state"],
        stored["createdAt"],
        stored["txStrategy"],
        stored["stageId"],
    )
    assert {"key": DEFAULT_KEY, "status": "LOCK_HELD", "owner": ALICE} == {
        k: lock[k] for k in ("key", "status", "owner")
    }
    assert millis + 60_000 == lock["expiresAt"]


@pytest.mark.parametrize(
    "change_id",
    ["with.dots.and[brackets]", "back`tick``s", "spaces and ünïcödé ✓", "x" * 300, "tab\there"],
    ids=["dots", "backticks", "unicode", "300-chars", "control-char"],
)
def test_awkward_change_ids_round_trip(deployment: CouchbaseDeployment, change_id: str) -> None:
    """Any change id works: sub-document paths are escaped, over-long keys are hashed."""
    store = _ready(deployment)
    started = _entry(change_id=change_id, state=AuditState.STARTED)
    applied = _entry(change_id=change_id, created_at=_at(1))
    store.append(started)
    store.append(applied)

    assert ({change_id: applied}, [started, applied]) == (
        dict(store.read_latest()),
        store.read_history(),
    )


@pytest.mark.parametrize("reader", ["read_latest", "read_history"])
def test_a_hand_edited_record_is_reported_naming_its_change(
    deployment: CouchbaseDeployment, reader: str
) -> None:
    """A stored entry the model cannot read raises `AuditStoreError` naming the change."""
    store = _ready(deployment)
    store.append(_entry(change_id="hand-edited-change"))
    latest = store.audit.get("latest").content_as[dict]
    latest["changes"]["hand-edited-change"]["state"] = "HALF_DONE"
    store.audit.upsert("latest", latest)
    index = store.audit.get("change::hand-edited-change").content_as[dict]
    key = index["entries"][0][0]
    stored = store.audit.get(key).content_as[dict]
    store.audit.upsert(key, {**stored, "state": "HALF_DONE"})

    with pytest.raises(AuditStoreError, match="hand-edited-change"):
        getattr(store, reader)()


# -- concurrency -------------------------------------------------------------------------


def test_concurrent_writers_of_the_latest_document_all_land(
    deployment: CouchbaseDeployment,
) -> None:
    """Six runners (own connections) appending to different changes at once: CAS retries keep
    every change in ``latest``; and the newest entry of a shared change wins."""
    scope = deployment.new_scope()
    first = _store(deployment, scope)
    first.initialize()
    stores = [_store(deployment, scope, cluster=deployment.connect()) for _ in range(6)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def write(n: int, store: CouchbaseAuditStore) -> None:
        start.wait()
        try:
            for i in range(5):
                store.append(_entry(execution_id=f"w{n}", change_id=f"c{n}-{i}"))
                store.append(
                    _entry(execution_id=f"w{n}-{i}", change_id="shared", created_at=_at(n * 5 + i))
                )
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n, s)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latest = first.read_latest()

    assert ([], 31, "w5-4") == (errors, len(latest), latest["shared"].execution_id)
    assert 60 == len(first.read_history())


def test_racing_acquirers_exactly_one_wins(deployment: CouchbaseDeployment) -> None:
    """Eight runners take a free lock at the same moment: one insert succeeds, seven are refused."""
    scope = deployment.new_scope()
    _store(deployment, scope).initialize()
    stores = [_store(deployment, scope, cluster=deployment.connect()) for _ in range(8)]
    start = threading.Barrier(len(stores))
    results: dict[int, bool] = {}

    def acquire(n: int, store: CouchbaseAuditStore) -> None:
        start.wait()
        results[n] = store.lock_acquire(DEFAULT_KEY, f"runner-{n}", T0, _at(60))

    threads = [threading.Thread(target=acquire, args=(n, s)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (winner,) = [n for n, won in results.items() if won]

    assert f"runner-{winner}" == stores[0].lock_holder(DEFAULT_KEY).owner


# -- transactions (TX_SHARED) ---------------------------------------------------------------


def test_entries_appended_in_a_transaction_commit_or_vanish_with_it(
    deployment: CouchbaseDeployment,
) -> None:
    """STARTED and APPLIED written through the store's shared-transaction handle appear only
    when the transaction commits; a transaction that raises leaves no trace."""
    from couchbase.exceptions import TransactionFailed

    store = _ready(deployment)
    store.append(_entry(change_id="before"))
    committed = [
        _entry(change_id="tx", state=s, created_at=_at(i))
        for i, s in enumerate([AuditState.STARTED, AuditState.APPLIED])
    ]
    failed = [_entry(change_id="gone", execution_id="e2", state=AuditState.STARTED)]

    def logic(entries: list[AuditEntry], fail: bool) -> Any:
        def run(ctx: Any) -> None:
            for entry in entries:
                store.append(entry, transaction=store.shared_transaction(ctx))
            if fail:
                raise RuntimeError("the change failed")

        return run

    store.cluster.transactions.run(logic(committed, fail=False))
    with pytest.raises(TransactionFailed):
        store.cluster.transactions.run(logic(failed, fail=True))

    assert ({"before", "tx"}, "APPLIED") == (
        set(store.read_latest()),
        store.read_latest()["tx"].state.value,
    )
    assert [("tx", "STARTED"), ("before", "APPLIED"), ("tx", "APPLIED")] == [
        (e.change_id, e.state.value) for e in store.read_history()
    ]


def test_a_handle_of_another_store_is_refused(fake: CouchbaseDeployment) -> None:
    """`append` accepts only the shared-transaction handle of the same store object."""
    store, other = _ready(fake), _ready(fake)

    with pytest.raises(AuditStoreError, match="shared transaction"):
        store.append(_entry(), transaction=other.shared_transaction(object()))

    assert [] == store.read_history()


def _interfere_once(monkeypatch: pytest.MonkeyPatch, method: str, action: Any) -> None:
    """Run ``action`` right after the fake serves the next ``method`` call (another runner
    writing between our read and our CAS write)."""
    from flamingock_provider.testing_couchbase import FakeCollection

    original = getattr(FakeCollection, method)
    pending = [action]

    def serve_then_interfere(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if pending:
            pending.pop()()
        return result

    monkeypatch.setattr(FakeCollection, method, serve_then_interfere)


def test_a_write_between_reading_and_writing_latest_is_retried(
    fake: CouchbaseDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another runner updates ``latest`` after our ``lookup_in``: our CAS write fails, we read
    again and write again, and both changes are in ``latest``."""
    store = _ready(fake)
    other = _store(fake, store.scope_name)
    store.append(_entry(change_id="earlier"))
    _interfere_once(monkeypatch, "lookup_in", lambda: other.append(_entry(change_id="theirs")))

    with fake.server.recording() as seen:
        store.append(_entry(change_id="mine"))

    ours = [op.name for op in seen if op.key == "latest"]
    assert ["lookup_in", "lookup_in", "mutate_in", "mutate_in", "lookup_in", "mutate_in"] == ours
    assert {"earlier", "theirs", "mine"} == set(store.read_latest())


def test_a_takeover_between_reading_and_replacing_the_lock_loses_the_round(
    fake: CouchbaseDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice's lease expired; Bob reads it, Carol takes it over before Bob's CAS replace:
    Bob's replace meets a CAS mismatch and Bob is refused, Carol holds the lock."""
    store = _ready(fake)
    bob, carol = _store(fake, store.scope_name), _store(fake, store.scope_name)
    store.lock_acquire(DEFAULT_KEY, ALICE, T0, _at(60))
    _interfere_once(
        monkeypatch, "get", lambda: carol.lock_acquire(DEFAULT_KEY, "carol", _at(61), _at(121))
    )

    bob_won = bob.lock_acquire(DEFAULT_KEY, BOB, _at(61), _at(121))

    assert (False, "carol") == (bob_won, store.lock_holder(DEFAULT_KEY).owner)
