"""The Couchbase audit store: key-value and sub-document operations only, no SQL++, no index.

Documents in the audit collection (``flamingockAuditLog``), see docs/audit-stores/couchbase.md:

- ``latest`` holds ``{"changes": {<changeId>: <entry>}}``, the latest entry of every change.
  `read_latest` is one ``get``. An append reads the change's slot with ``lookup_in`` and, when
  the new entry sorts later, writes it with a CAS-checked ``mutate_in`` (retried on a mismatch).
- ``entry::<sha256(executionId, changeId, state)>`` holds one entry. Its ``insert`` is the
  uniqueness check: the key exists once per (execution, change, state).
- ``change::<changeId>`` is the change's history index, ``{"entries": [[<entry key>,
  <createdAtMicros>], ...]}``, extended with a sub-document ``array_append``. `read_history`
  gets ``latest`` (the list of changes), then the indexes, then the entries: three round trips.

An append writes entry, index, latest in that order: a crash in between leaves the history ahead
of ``latest`` (which then shows the earlier state), never behind it.

Lock collection (``flamingockLock``): one document per key, taken by ``insert``, taken over by a
CAS ``replace`` when expired or ours; extend and release are CAS-checked. The runner's clock
decides expiry: ``now`` and ``expires_at`` come from the caller, the server's time is never read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from couchbase.exceptions import (
    CasMismatchException,
    CollectionAlreadyExistsException,
    CouchbaseException,
    DocumentExistsException,
    DocumentNotFoundException,
    ScopeAlreadyExistsException,
)
from couchbase.options import (
    GetMultiOptions,
    InsertOptions,
    MutateInOptions,
)
from couchbase.subdocument import StoreSemantics
from couchbase.subdocument import array_append as sd_array_append
from couchbase.subdocument import get as sd_get
from couchbase.subdocument import upsert as sd_upsert

from flamingock_provider.engine.errors import AuditStoreError, ValidationError
from flamingock_provider.engine.model import AuditEntry, LockRecord
from flamingock_provider.stores._couchbase_cluster import ClusterHandle, durability_option, scrub
from flamingock_provider.stores._couchbase_docs import (
    LATEST_KEY,
    entry_document,
    entry_from_document,
    entry_key,
    from_micros,
    index_key,
    latest_document,
    latest_path,
    lock_expiry_micros,
    sort_key,
    to_micros,
)
from flamingock_provider.stores._couchbase_lock import CasLock

T = TypeVar("T")

DEFAULT_SCOPE = "_default"
DEFAULT_AUDIT_COLLECTION = "flamingockAuditLog"
DEFAULT_LOCK_COLLECTION = "flamingockLock"
CAS_RETRIES = 20
READY_WAIT_SECONDS = 10.0


class SharedTransaction:
    """The audit handle of a target transaction run on this store's cluster (`TX_SHARED`)."""

    __slots__ = ("context", "store")

    def __init__(self, store: CouchbaseAuditStore, context: Any) -> None:
        self.store = store
        self.context = context


class CouchbaseAuditStore:
    """`AuditStore` on a Couchbase bucket, with key-value and sub-document operations only.

    :param cluster: a `ClusterHandle` (opened on first use, closed by `close`), or an SDK
        ``Cluster`` (or `testing_couchbase.FakeCluster`) that the caller keeps and closes.
    :param bucket: the bucket (it must exist).
    :param scope: the scope of both collections.
    :param audit_collection: history collection name.
    :param lock_collection: lock collection name.
    :param auto_create: create the scope and collections when missing; else validate them.
    :param durability: ``none``, ``majority``, ``majority_and_persist_active`` or
        ``persist_to_majority``, for every audit and lock write.
    """

    def __init__(
        self,
        cluster: ClusterHandle | Any,
        *,
        bucket: str,
        scope: str = DEFAULT_SCOPE,
        audit_collection: str = DEFAULT_AUDIT_COLLECTION,
        lock_collection: str = DEFAULT_LOCK_COLLECTION,
        auto_create: bool = True,
        durability: str = "majority",
    ) -> None:
        if not bucket:
            raise ValidationError("Couchbase audit store: a bucket is required")
        self.handle = cluster if isinstance(cluster, ClusterHandle) else ClusterHandle(cluster)
        self.bucket_name = bucket
        self.scope_name = scope or DEFAULT_SCOPE
        self.audit_collection_name = audit_collection
        self.lock_collection_name = lock_collection
        self.auto_create = auto_create
        self.durability = durability
        self._durability = durability_option(durability)  # validates the name
        self._ready = False
        self._locks = CasLock(lambda: self.lock, self._options)
        self._opened: tuple[Any, Any] | None = None
        self._mutex = threading.Lock()

    # -- identity -------------------------------------------------------------------------

    @property
    def description(self) -> str:
        return (
            f"Couchbase audit store {self.handle.location}, bucket '{self.bucket_name}', scope "
            f"'{self.scope_name}' (collections {self.audit_collection_name}, "
            f"{self.lock_collection_name})"
        )

    @property
    def cluster(self) -> Any:
        """The SDK cluster (opened now if it was not yet)."""
        return self.handle.get()

    def _bucket(self) -> Any:
        """The SDK bucket, opened once per cluster connection (opening one is a request)."""
        cluster = self.cluster
        with self._mutex:
            cached = self._opened
            if cached is None or cached[0] is not cluster:
                cached = self._opened = (cluster, cluster.bucket(self.bucket_name))
        return cached[1]

    def _collection(self, name: str) -> Any:
        return self._bucket().scope(self.scope_name).collection(name)

    @property
    def audit(self) -> Any:
        return self._collection(self.audit_collection_name)

    @property
    def lock(self) -> Any:
        return self._collection(self.lock_collection_name)

    def shares_bucket_with(self, handle: ClusterHandle, bucket: str) -> bool:
        """Whether a target on ``handle``/``bucket`` can write these audit records in its
        transactions: the same cluster, reached as the same user, and the same bucket."""
        return self.handle.identity == handle.identity and self.bucket_name == bucket

    def shared_transaction(self, context: Any) -> SharedTransaction:
        """The handle `append` accepts for a transaction (attempt context) on this cluster."""
        return SharedTransaction(self, context)

    # -- scope and collections -------------------------------------------------------------

    def initialize(self) -> None:
        if self._ready:
            return
        missing = self._guard("initialize", self._missing)
        if missing and not self.auto_create:
            raise AuditStoreError(
                f"{self.description}: {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing and auto_create is off. Create "
                "them (see docs/audit-stores/couchbase.md) or set auto_create=true.",
                store=self.description,
                operation="validate",
            )
        if missing:
            self._guard("initialize", self._create)
        self._ready = True

    def is_initialized(self) -> bool:
        return not self._guard("inspect", self._missing)

    def _missing(self) -> list[str]:
        manager = self._bucket().collections()
        scopes = {s.name: {c.name for c in s.collections} for s in manager.get_all_scopes()}
        names = (self.audit_collection_name, self.lock_collection_name)
        if self.scope_name not in scopes:
            return [f"scope '{self.scope_name}'"] + [f"collection '{n}'" for n in names]
        present = scopes[self.scope_name]
        return [f"collection '{self.scope_name}.{n}'" for n in names if n not in present]

    def _create(self) -> None:
        manager = self._bucket().collections()
        if self.scope_name != DEFAULT_SCOPE:
            with contextlib.suppress(ScopeAlreadyExistsException):  # another runner's
                manager.create_scope(self.scope_name)
        for name in (self.audit_collection_name, self.lock_collection_name):
            with contextlib.suppress(CollectionAlreadyExistsException):
                manager.create_collection(self.scope_name, name)
        # The cluster applies a new collection manifest asynchronously: wait until it lists
        # both collections, so the first write does not meet an unknown collection.
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while self._missing():
            if time.monotonic() > deadline:
                raise AuditStoreError(
                    f"{self.description}: the created collections did not appear within "
                    f"{READY_WAIT_SECONDS:.0f}s",
                    store=self.description,
                    operation="initialize",
                )
            time.sleep(0.1)

    # -- history ----------------------------------------------------------------------------

    def read_latest(self) -> Mapping[str, AuditEntry]:
        """One ``get`` of the ``latest`` document."""

        def run() -> dict[str, AuditEntry]:
            changes = self._latest_changes()
            return {change_id: self._entry(doc) for change_id, doc in changes.items()}

        return self._guard("read_latest", run)

    def read_history(self, since: datetime | None = None) -> list[AuditEntry]:
        """``latest`` (which changes exist), their indexes, then the entries: three round trips."""
        floor = None if since is None else to_micros(since)

        def run() -> list[AuditEntry]:
            audit = self.audit
            change_ids = list(self._latest_changes())
            if not change_ids:
                return []
            indexes = self._get_all(audit, [index_key(c) for c in change_ids], "history index")
            keys = [
                key
                for index in indexes.values()
                for key, micros in index.get("entries", [])
                if floor is None or micros >= floor
            ]
            docs = self._get_all(audit, keys, "audit entry") if keys else {}
            entries = [self._entry(doc) for doc in docs.values()]
            return sorted(entries, key=AuditEntry.sort_key)

        return self._guard("read_history", run)

    def _latest_changes(self) -> dict[str, Any]:
        try:
            result = self.audit.get(LATEST_KEY)
        except DocumentNotFoundException:
            return {}
        changes = result.content_as[dict].get("changes", {})
        return changes if isinstance(changes, dict) else {}

    def _get_all(self, collection: Any, keys: list[str], what: str) -> dict[str, Any]:
        result = collection.get_multi(keys, GetMultiOptions(return_exceptions=True))
        for key, err in result.exceptions.items():
            if isinstance(err, DocumentNotFoundException):
                raise AuditStoreError(
                    f"{self.description}: {what} '{key}' is missing although the history "
                    "refers to it; it was removed by hand. Restore it from a backup.",
                    store=self.description,
                    operation="read_history",
                )
            raise err
        return {key: result.results[key].content_as[dict] for key in keys}

    def append(self, entry: AuditEntry, transaction: object | None = None) -> None:
        doc = entry_document(entry)
        if transaction is not None:
            if not isinstance(transaction, SharedTransaction) or transaction.store is not self:
                raise AuditStoreError(
                    f"{self.description}: a shared transaction must be one a Couchbase target "
                    "system opened on this store's own cluster and bucket",
                    store=self.description,
                    operation="append",
                )
            context = transaction.context
            self._guard("append", lambda: self._append_in_transaction(context, entry, doc))
            return
        self._guard("append", lambda: self._append(entry, doc))

    def _append(self, entry: AuditEntry, doc: dict[str, Any]) -> None:
        audit, key = self.audit, entry_key(entry)
        try:
            audit.insert(key, doc, self._options(InsertOptions))
        except DocumentExistsException:
            raise self._duplicate(entry) from None
        audit.mutate_in(
            index_key(entry.change_id),
            [
                sd_upsert("changeId", entry.change_id),
                sd_array_append("entries", [key, doc["createdAtMicros"]], create_parents=True),
            ],
            self._options(MutateInOptions, store_semantics=StoreSemantics.UPSERT),
        )
        slot = latest_path(entry.change_id)
        for _ in range(CAS_RETRIES):
            try:
                found = audit.lookup_in(LATEST_KEY, [sd_get(slot)])
            except DocumentNotFoundException:
                try:
                    audit.insert(
                        LATEST_KEY, latest_document(entry, doc), self._options(InsertOptions)
                    )
                    return
                except DocumentExistsException:
                    continue  # another writer created it first: read it and try again
            if found.exists(0) and sort_key(found.content_as[dict](0)) >= sort_key(doc):
                return  # an entry that sorts later is already the latest
            try:
                audit.mutate_in(
                    LATEST_KEY,
                    [sd_upsert(slot, doc, create_parents=True)],
                    self._options(MutateInOptions, cas=found.cas),
                )
                return
            except (CasMismatchException, DocumentNotFoundException):
                continue  # another writer changed `latest` between our read and write
        raise AuditStoreError(
            f"{self.description}: the latest entry of '{entry.change_id}' kept changing under "
            f"{CAS_RETRIES} attempts; the entry is in the history, run again to settle it.",
            store=self.description,
            operation="append",
        )

    def _append_in_transaction(self, ctx: Any, entry: AuditEntry, doc: dict[str, Any]) -> None:
        """The same three documents, written with the transaction's whole-document operations
        (a transaction has no sub-document mutations); they commit with the change."""
        audit, key = self.audit, entry_key(entry)
        if _tx_get(ctx, audit, key) is not None:
            raise self._duplicate(entry)
        ctx.insert(audit, key, doc)
        item = [key, doc["createdAtMicros"]]
        index = _tx_get(ctx, audit, index_key(entry.change_id))
        if index is None:
            ctx.insert(
                audit, index_key(entry.change_id), {"changeId": entry.change_id, "entries": [item]}
            )
        else:
            content = index.content_as[dict]
            content.setdefault("entries", []).append(item)
            ctx.replace(index, content)
        latest = _tx_get(ctx, audit, LATEST_KEY)
        if latest is None:
            ctx.insert(audit, LATEST_KEY, latest_document(entry, doc))
            return
        content = latest.content_as[dict]
        changes = content.setdefault("changes", {})
        current = changes.get(entry.change_id)
        if current is None or sort_key(current) < sort_key(doc):
            changes[entry.change_id] = doc
            ctx.replace(latest, content)

    def _duplicate(self, entry: AuditEntry) -> AuditStoreError:
        return AuditStoreError(
            f"{self.description}: duplicate audit entry (execution {entry.execution_id}, "
            f"change '{entry.change_id}', state {entry.state.value})",
            store=self.description,
            operation="append",
        )

    # -- lock (see `_couchbase_lock`) ---------------------------------------------------------

    def lock_acquire(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        """``insert``; if the record exists and is expired or ours, a CAS ``replace``."""
        return self._guard("lock_acquire", lambda: self._locks.acquire(key, owner, now, expires_at))

    def lock_extend(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        """One CAS ``replace`` with the CAS of our last lock write; re-read only on a mismatch."""
        return self._guard("lock_extend", lambda: self._locks.extend(key, owner, expires_at))

    def lock_release(self, key: str, owner: str) -> None:
        """A CAS ``remove`` of our record; someone else's record is left alone."""
        self._guard("lock_release", lambda: self._locks.release(key, owner))

    def lock_holder(self, key: str) -> LockRecord | None:
        body = self._guard("lock_holder", lambda: self._locks.holder(key))
        if body is None:
            return None
        try:
            expires_at = from_micros(lock_expiry_micros(body))
            return LockRecord(key, str(body["owner"]), expires_at, body["status"])
        except (KeyError, TypeError, ValueError) as err:
            raise AuditStoreError(
                f"{self.description}: lock record '{key}' is unreadable ({err}); remove it",
                store=self.description,
                operation="lock_holder",
            ) from err

    def close(self) -> None:
        self.handle.close()

    # -- helpers ----------------------------------------------------------------------------

    def _options(self, kind: Callable[..., Any], **values: Any) -> Any:
        if self._durability is not None:
            values["durability"] = self._durability
        return kind(**values)

    def _guard(self, operation: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except AuditStoreError:
            raise
        except CouchbaseException as err:
            detail = str(getattr(err, "message", None) or err).strip().splitlines()
            text = scrub(detail[0][:300] if detail else "", self.handle.secret)
            raise AuditStoreError(
                f"{self.description}: {operation} failed: {type(err).__name__}: {text}",
                store=self.description,
                operation=operation,
            ) from err

    def _entry(self, doc: Mapping[str, Any]) -> AuditEntry:
        try:
            return entry_from_document(doc)
        except (KeyError, TypeError, ValueError) as err:
            raise AuditStoreError(
                f"{self.description}: audit record of change '{doc.get('changeId')}' "
                f"(execution {doc.get('executionId')}) is unreadable: {err!r}. It was not "
                "written by flamingock_provider; fix or remove it.",
                store=self.description,
                operation="read",
            ) from err


def _tx_get(ctx: Any, collection: Any, key: str) -> Any:
    """A document read in a transaction, or None (a missing document does not end it)."""
    try:
        return ctx.get(collection, key)
    except DocumentNotFoundException:
        return None
