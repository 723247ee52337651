"""MongoDB on mongomock-ng for the benchmarks: an in-process stand-in, not a server.

No ``mongod`` runs on these machines (ARCHITECTURE.md §7), so the store runs on the tests'
`mongodb_servers.FakeCluster`. Round trips are driver calls, counted through a proxy of the
store's client as `tests/contract/test_mongodb_store.py::test_round_trips_per_operation` does
(each is one command on a real server: ``insert``, ``aggregate``, ``update`` …). The floor
inserts the same documents (`mongodb.document`) with ``insert_one`` on a collection carrying the
store's indexes, directly on mongomock-ng.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from backends import TESTS, Backend, Counter, new_prefix

from flamingock_provider.engine.model import AuditEntry
from flamingock_provider.stores.mongodb import MongoAuditStore, document

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
import mongodb_servers

DATABASE = "flamingock_bench"
_CURSORS = ("find", "aggregate", "list_indexes")


class _Counting:
    """A proxy recording each driver call made on a client, its databases and collections."""

    def __init__(self, target: Any, counter: Counter) -> None:
        self._target, self._counter = target, counter
        self._children: dict[str, _Counting] = {}

    def __getitem__(self, name: str) -> Any:
        # Kept: each `FakeDatabase.get_collection` (tests/mongodb_servers.py) wraps the cached
        # collection's `aggregate` once more, which overflows the stack after ~1,000 reads.
        if name not in self._children:
            self._children[name] = _Counting(self._target[name], self._counter)
        return self._children[name]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name in ("get_database", "get_collection"):
            return lambda *a, **k: _Counting(attr(*a, **k), self._counter)
        if not callable(attr) or name.startswith("_") or name == "close":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._counter.count += 1
            result = attr(*args, **kwargs)
            return list(result) if name in _CURSORS else result  # one batch: one round trip

        return call


class MongoBackend(Backend):
    """mongomock-ng in process: collections ``<prefix>audit`` / ``<prefix>lock``."""

    name = "MongoDB"
    kind = "mongomock-ng, in-process stand-in, not a server"
    note = (
        "mongomock-ng is a Python imitation of MongoDB inside the benchmark's own process: no "
        "network, no storage engine, no real index (a unique index is checked by scanning "
        "every document, a sort sorts in Python), so its times say nothing about a real "
        "server; the round-trip counts do carry over, one driver call being one command."
    )
    floor_text = (
        "one `insert_one` of the store's document per entry, on a collection with the store's "
        "indexes, directly on mongomock-ng"
    )
    counting = (
        "driver calls on the store's client, counted through a proxy of it (one call, one "
        "command on a server; a cursor is read in one batch)"
    )

    def __init__(self) -> None:
        self.cluster = mongodb_servers.FakeCluster()
        self.client = self.cluster.client()
        self._counters: dict[int, Counter] = {}

    def store(self, prefix: str | None = None) -> MongoAuditStore:
        prefix = prefix or new_prefix()
        counter = Counter()
        store = MongoAuditStore(
            _Counting(self.client, counter),  # type: ignore[arg-type]
            DATABASE,
            audit_collection=f"{prefix}audit",
            lock_collection=f"{prefix}lock",
        )
        self._counters[id(store)] = counter
        return store

    def prefix_of(self, store: MongoAuditStore) -> str:
        return store.audit_collection_name[: -len("audit")]

    @contextmanager
    def round_trips(self, store: MongoAuditStore) -> Iterator[Counter]:
        total, counted = self._counters[id(store)], Counter()
        before = total.count
        try:
            yield counted
        finally:
            counted.count = total.count - before

    @staticmethod
    def _collection(store: MongoAuditStore) -> Any:
        """The store's audit collection (its concerns and codec options), without the proxy."""
        return store.audit._target

    def floor(self, entries: Sequence[AuditEntry]) -> tuple[float, int]:
        """One ``insert_one`` per entry, documents built up front, same indexes and concern."""
        target = self.store()
        target.initialize()
        collection = self._collection(target)
        docs = [document(e) for e in entries]
        started = time.perf_counter()
        for doc in docs:
            collection.insert_one(doc)
        return time.perf_counter() - started, len(docs)

    def add_history(self, store: MongoAuditStore, entries: Sequence[AuditEntry]) -> None:
        """``insert_many`` of the documents; the unique-index check is skipped while seeding.

        mongomock-ng checks a unique index by scanning every document, which makes 100,000
        inserts quadratic; these entries are unique by construction (fresh execution ids).
        """
        collection = self._collection(store)
        collection._ensure_uniques = lambda _doc: None  # this Collection object only
        try:
            docs = [document(e) for e in entries]
            for start in range(0, len(docs), 10_000):
                collection.insert_many(docs[start : start + 10_000])
        finally:
            del collection._ensure_uniques

    def close(self) -> None:
        self.client.drop_database(DATABASE)
        self.client.close()
        self._counters.clear()
