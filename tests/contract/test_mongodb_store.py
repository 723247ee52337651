"""What the MongoDB audit store adds to the contract: its documents, indexes, validation,
round trips, and the server-clock lock.

Runs on mongomock-ng (``mongodb``) and, when ``FLAMINGOCK_TEST_MONGODB_URI`` is set, on that
server (``mongodb-real``), through the contract suite's own ``store_factory``. Round trips are
counted as driver calls on mongomock-ng (it sends no commands) and as wire commands, with
pymongo's command monitoring, on the real server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import mongodb_servers
import pytest
from store_backends import MongoBackend

from flamingock_provider.engine.errors import AuditStoreError
from flamingock_provider.engine.lock import DEFAULT_KEY
from flamingock_provider.engine.model import CAMEL_FIELDS, AuditEntry, AuditState, TxStrategy
from flamingock_provider.stores.mongodb import MongoAuditStore, document

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
ALICE, BOB = "alice@host-a#1", "bob@host-b#2"

pytestmark = pytest.mark.parametrize("store_factory", mongodb_servers.backend_ids(), indirect=True)


def _entry(**overrides: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "execution_id": "exec-1",
        "change_id": "change-a",
        "state": AuditState.APPLIED,
        "created_at": T0,
        "tx_strategy": TxStrategy.TX_SHARED,
    }
    fields.update(overrides)
    return AuditEntry(**fields)


def _ready(backend: MongoBackend, **options: Any) -> MongoAuditStore:
    store = backend(**options)
    store.initialize()
    return store  # type: ignore[return-value]


# -- documents and indexes -------------------------------------------------------------------


def test_documents_carry_flamingock_fields_and_a_bson_date(store_factory: MongoBackend) -> None:
    """An entry is stored with Flamingock's camelCase names, ``createdAt`` as a date, and the
    two exact sort fields."""
    store = _ready(store_factory)
    store.append(_entry())

    (doc,) = store.audit.find({}, {"_id": 0})

    expected_fields = {*CAMEL_FIELDS.values(), "createdAtMicros", "statePriority"}
    assert expected_fields == set(doc)
    assert (True, T0.replace(microsecond=123000), 2) == (
        isinstance(doc["createdAt"], datetime),
        doc["createdAt"],
        doc["statePriority"],
    )


def test_initialize_creates_the_unique_and_latest_indexes(store_factory: MongoBackend) -> None:
    """Auto-create builds the (executionId, changeId, state) unique index, the latest-entry
    index, and the unique ``key`` index of the lock collection."""
    store = _ready(store_factory)

    indexes = {
        (ix["name"], tuple(dict(ix["key"]).items()), bool(ix.get("unique")))
        for coll in (store.audit, store.lock)
        for ix in coll.list_indexes()
        if ix["name"] != "_id_"
    }

    audit, lock = store_factory.audit_collection, store_factory.lock_collection
    assert {
        (f"{audit}_uq", (("executionId", 1), ("changeId", 1), ("state", 1)), True),
        (
            f"{audit}_latest",
            (("changeId", 1), ("createdAtMicros", -1), ("statePriority", -1)),
            False,
        ),
        (f"{lock}_key", (("key", 1),), True),
    } == indexes


def test_equivalent_indexes_under_other_names_are_accepted(store_factory: MongoBackend) -> None:
    """Indexes a DBA created by hand, with other names, satisfy auto-create as they are."""
    db = store_factory.client[store_factory.database]
    db[store_factory.audit_collection].create_index(
        [("executionId", 1), ("changeId", 1), ("state", 1)], unique=True, name="by_hand"
    )
    db[store_factory.lock_collection].create_index("key", unique=True, name="by_hand")
    db[store_factory.audit_collection].create_index(
        "changeId", name=f"{store_factory.audit_collection}_uq"
    )

    store = _ready(store_factory)
    store.append(_entry())

    assert [_entry()] == store.read_history()


@pytest.mark.parametrize("present", ["none", "audit", "lock", "audit-without-unique-index"])
def test_without_auto_create_what_is_missing_is_named(
    store_factory: MongoBackend, present: str
) -> None:
    """``auto_create=False`` creates nothing and names the missing collection or index."""
    db = store_factory.client[store_factory.database]
    audit, lock = store_factory.audit_collection, store_factory.lock_collection
    if present == "audit":
        db[audit].create_index([("executionId", 1), ("changeId", 1), ("state", 1)], unique=True)
    if present == "lock":
        db[lock].create_index("key", unique=True)
    if present == "audit-without-unique-index":
        db[lock].create_index("key", unique=True)
        db[audit].create_index([("executionId", 1), ("changeId", 1), ("state", 1)])
    expected = {
        "none": f"collection '{audit}' does not exist",
        "audit": f"collection '{lock}' does not exist",
        "lock": f"collection '{audit}' does not exist",
        "audit-without-unique-index": f"collection '{audit}' lacks a unique index",
    }[present]
    before = sorted(db.list_collection_names())
    store = store_factory(auto_create=False)

    with pytest.raises(AuditStoreError) as caught:
        store.initialize()

    assert (True, True) == (expected in str(caught.value), "createIndex" in str(caught.value))
    assert before == sorted(db.list_collection_names())


def test_without_auto_create_prepared_collections_are_used(store_factory: MongoBackend) -> None:
    """Collections and indexes made beforehand (DocumentDB, Cosmos DB) work without creation."""
    db = store_factory.client[store_factory.database]
    db[store_factory.audit_collection].create_index(
        [("executionId", 1), ("changeId", 1), ("state", 1)], unique=True
    )
    db[store_factory.lock_collection].create_index("key", unique=True)
    store = _ready(store_factory, auto_create=False)

    store.append(_entry())

    assert ({"change-a": _entry()}, True) == (
        dict(store.read_latest()),
        store.lock_acquire(DEFAULT_KEY, ALICE, T0, T0 + timedelta(seconds=60)),
    )


def test_a_document_with_an_unknown_state_is_reported_naming_its_change(
    store_factory: MongoBackend,
) -> None:
    """A hand-edited document the model cannot read raises `AuditStoreError` naming it."""
    store = _ready(store_factory)
    store.append(_entry(change_id="good"))
    store.audit.insert_one(
        {"executionId": "x", "changeId": "hand-edited", "state": "HALF_DONE", "createdAt": T0}
    )

    for reader in (store.read_latest, store.read_history):
        with pytest.raises(AuditStoreError) as caught:
            reader()
        assert "hand-edited" in str(caught.value)


# -- round trips -----------------------------------------------------------------------------


class _Counting:
    """A proxy that records each driver call on collections and databases (mongomock-ng)."""

    def __init__(self, target: Any, calls: list[str]) -> None:
        self._target, self._calls = target, calls

    def __getitem__(self, name: str) -> Any:
        return _Counting(self._target[name], self._calls)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name in ("get_database", "get_collection"):
            return lambda *a, **k: _Counting(attr(*a, **k), self._calls)
        if not callable(attr) or name.startswith("_") or name == "close":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(name)
            result = attr(*args, **kwargs)
            return list(result) if name in ("find", "aggregate", "list_indexes") else result

        return call


def _counted(backend: MongoBackend) -> tuple[Any, list[str], Callable[[], None]]:
    """A client whose round trips are recorded: driver calls, or wire commands when real."""
    calls: list[str] = []
    if not backend.real:
        return _Counting(backend.client, calls), calls, lambda: None
    import pymongo
    from pymongo import monitoring

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name not in ("endSessions",):
                calls.append(event.command_name)

        def succeeded(self, event: Any) -> None: ...

        def failed(self, event: Any) -> None: ...

    uri = mongodb_servers.real_uri()
    client = pymongo.MongoClient(uri, tz_aware=True, event_listeners=[Listener()])
    return client, calls, client.close


def test_round_trips_per_operation(store_factory: MongoBackend) -> None:
    """Initialise: 2; append: 1; latest of 250 changes (1,000 entries): 1; lock calls: 1 each."""
    client, calls, close = _counted(store_factory)
    try:
        store = store_factory(client=client)
        counts: dict[str, int] = {}

        def count(name: str, work: Callable[[], Any]) -> Any:
            calls.clear()
            result = work()
            counts[name] = len(calls)
            return result

        count("initialize", store.initialize)
        count("append", lambda: store.append(_entry()))
        entries = [
            _entry(
                execution_id=f"e{i}", change_id=f"c{i % 250}", created_at=T0 + timedelta(seconds=i)
            )
            for i in range(1000)
        ]
        store.audit.insert_many([document(e) for e in entries])
        latest = count("read_latest", store.read_latest)
        later = T0 + timedelta(seconds=60)
        count("lock_acquire_free", lambda: store.lock_acquire(DEFAULT_KEY, ALICE, T0, later))
        count("lock_acquire_held", lambda: store.lock_acquire(DEFAULT_KEY, BOB, T0, later))
        count("lock_extend", lambda: store.lock_extend(DEFAULT_KEY, ALICE, T0, later))
        count("lock_release", lambda: store.lock_release(DEFAULT_KEY, ALICE))
    finally:
        close()

    assert 251 == len(latest)
    assert {
        "initialize": 2,
        "append": 1,
        "read_latest": 1,
        "lock_acquire_free": 1,
        "lock_acquire_held": 1,
        "lock_extend": 1,
        "lock_release": 1,
    } == counts


# -- the real server only ---------------------------------------------------------------------


def _real_only(backend: MongoBackend, why: str) -> None:
    if not backend.real:
        pytest.skip(f"mongomock-ng {why}; runs when FLAMINGOCK_TEST_MONGODB_URI is set")


def test_server_clock_lock_expires_by_the_servers_time(store_factory: MongoBackend) -> None:
    """``lock_clock="server"``: the lease length counts from ``$$NOW``, whatever ``now`` says."""
    _real_only(store_factory, "does not evaluate $$NOW")
    store = _ready(store_factory, lock_clock="server")
    far_past = datetime(2001, 1, 1, tzinfo=timezone.utc)
    lease = timedelta(seconds=1)

    taken = store.lock_acquire(DEFAULT_KEY, ALICE, far_past, far_past + lease)
    refused = store.lock_acquire(DEFAULT_KEY, BOB, far_past + lease * 5, far_past + lease * 6)
    holder = store.lock_holder(DEFAULT_KEY)
    time.sleep(1.2)
    taken_over = store.lock_acquire(DEFAULT_KEY, BOB, far_past, far_past + lease)
    extended = store.lock_extend(DEFAULT_KEY, ALICE, far_past, far_past + lease)

    assert (True, False, True, False) == (taken, refused, taken_over, extended)
    assert holder is not None and holder.expires_at.year >= 2024


def test_read_latest_is_served_by_the_latest_index(store_factory: MongoBackend) -> None:
    """The server plans the latest-entry aggregation on the ``_latest`` index."""
    _real_only(store_factory, "has no query planner")
    store = _ready(store_factory)
    for i in range(20):
        store.append(
            _entry(
                execution_id=f"e{i}", change_id=f"c{i % 4}", created_at=T0 + timedelta(seconds=i)
            )
        )
    pipeline = [
        {"$sort": {"changeId": 1, "createdAtMicros": -1, "statePriority": -1}},
        {"$group": {"_id": "$changeId", "doc": {"$first": "$$ROOT"}}},
    ]

    plan = store.database.command(
        "explain", {"aggregate": store.audit_collection_name, "pipeline": pipeline, "cursor": {}}
    )

    assert f"{store.audit_collection_name}_latest" in str(plan)
