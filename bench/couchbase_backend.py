"""Couchbase on the in-memory SDK fake for the benchmarks: an in-process stand-in, not a server.

`flamingock_provider.testing_couchbase.FakeCouchbaseServer` records every operation it serves;
a store's round trips are the key-value operations on its two collections (a ``get_multi``
counts one per key, as the SDK sends one request per key) and the collection-manager calls.
The floor issues the store's own operations for each audit write directly on the fake
collections: ``insert`` of the entry, ``mutate_in`` of the change's history index,
``lookup_in`` of the change's slot in ``latest`` and its CAS-checked ``mutate_in`` (an
``insert`` of ``latest`` the first time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from backends import Backend, Counter, new_prefix
from couchbase.exceptions import DocumentNotFoundException
from couchbase.options import InsertOptions, MutateInOptions, UpsertOptions
from couchbase.subdocument import StoreSemantics
from couchbase.subdocument import array_append as sd_array_append
from couchbase.subdocument import get as sd_get
from couchbase.subdocument import upsert as sd_upsert

from flamingock_provider.engine.model import AuditEntry
from flamingock_provider.stores._couchbase_cluster import durability_option
from flamingock_provider.stores._couchbase_docs import (
    LATEST_KEY,
    entry_document,
    entry_key,
    index_key,
    latest_document,
    latest_path,
)
from flamingock_provider.stores.couchbase import CouchbaseAuditStore
from flamingock_provider.testing_couchbase import FakeCouchbaseServer

BUCKET = "flamingock"
SCOPE = "bench"
DURABILITY = "majority"  # the store's default; the fake only records it
MANAGER = ("get_all_scopes", "create_scope", "create_collection")  # HTTP calls on a cluster


class CouchbaseBackend(Backend):
    """The SDK fake in process: scope ``bench``, collections ``<prefix>audit``, ``<prefix>lock``."""

    name = "Couchbase"
    kind = "in-memory SDK fake, in-process stand-in, not a server"
    note = (
        "the Couchbase fake (`flamingock_provider.testing_couchbase`) keeps documents in a "
        "Python dict inside the benchmark's own process: no network, no durability wait, no "
        "replication, so its times say nothing about a real cluster; the round-trip counts do "
        "carry over, one recorded operation being one key-value request."
    )
    floor_text = (
        "the store's operations per entry directly on the fake collections: `insert` of the "
        "entry, `mutate_in` of the change's history index, `lookup_in` of its slot in `latest` "
        "and a CAS-checked `mutate_in` of it"
    )
    counting = (
        "key-value operations on the store's two collections, plus collection-manager calls "
        "(listing scopes when it starts), as the fake records them "
        "(`FakeCouchbaseServer.operations`; a `get_multi` counts one per key)"
    )

    def __init__(self) -> None:
        self.server = FakeCouchbaseServer(buckets=[BUCKET])
        self._stores: list[CouchbaseAuditStore] = []

    def store(self, prefix: str | None = None) -> CouchbaseAuditStore:
        prefix = prefix or new_prefix()
        store = CouchbaseAuditStore(
            self.server.connect(),
            bucket=BUCKET,
            scope=SCOPE,
            audit_collection=f"{prefix}audit",
            lock_collection=f"{prefix}lock",
            durability=DURABILITY,
        )
        self._stores.append(store)
        return store

    def prefix_of(self, store: CouchbaseAuditStore) -> str:
        return store.audit_collection_name[: -len("audit")]

    @contextmanager
    def round_trips(self, store: CouchbaseAuditStore) -> Iterator[Counter]:
        mine = {
            f"{BUCKET}.{SCOPE}.{name}"
            for name in (store.audit_collection_name, store.lock_collection_name)
        }
        counter = Counter()
        with self.server.recording() as seen:
            yield counter
        counter.count = sum(1 for op in seen if op.keyspace in mine or op.name in MANAGER)

    def floor(self, entries: Sequence[AuditEntry]) -> tuple[float, int]:
        """The store's four operations per audit write, documents built up front."""
        target = self.store()
        target.initialize()
        audit = target.audit
        durability = durability_option(DURABILITY)
        insert = InsertOptions(durability=durability)
        upsert_index = MutateInOptions(durability=durability, store_semantics=StoreSemantics.UPSERT)
        writes = [(e, entry_key(e), entry_document(e)) for e in entries]
        trips = 0
        started = time.perf_counter()
        for entry, key, doc in writes:
            audit.insert(key, doc, insert)
            audit.mutate_in(
                index_key(entry.change_id),
                [
                    sd_upsert("changeId", entry.change_id),
                    sd_array_append("entries", [key, doc["createdAtMicros"]], create_parents=True),
                ],
                upsert_index,
            )
            slot = latest_path(entry.change_id)
            trips += 3
            try:
                found = audit.lookup_in(LATEST_KEY, [sd_get(slot)])
            except DocumentNotFoundException:
                audit.insert(LATEST_KEY, latest_document(entry, doc), insert)
                continue
            audit.mutate_in(
                LATEST_KEY,
                [sd_upsert(slot, doc, create_parents=True)],
                MutateInOptions(durability=durability, cas=found.cas),
            )
            trips += 1
        return time.perf_counter() - started, trips

    def add_history(self, store: CouchbaseAuditStore, entries: Sequence[AuditEntry]) -> None:
        """Insert each entry, then extend each change's history index with one upsert."""
        audit = store.audit
        added: dict[str, list[list[Any]]] = {}
        for entry in entries:
            key, doc = entry_key(entry), entry_document(entry)
            audit.insert(key, doc)
            added.setdefault(entry.change_id, []).append([key, doc["createdAtMicros"]])
        for change_id, items in added.items():
            index = audit.get(index_key(change_id)).content_as[dict]
            index["entries"] = index.get("entries", []) + items
            audit.upsert(index_key(change_id), index, UpsertOptions())

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self._stores.clear()
        self.server = FakeCouchbaseServer(buckets=[])  # let the data go
