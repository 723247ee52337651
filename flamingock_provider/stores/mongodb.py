"""The MongoDB audit store (pymongo 4): an append-only history collection and a lock collection.

Documents carry Flamingock's camelCase fields (`AuditEntry.as_json`), with ``createdAt`` as a
BSON date. A BSON date holds milliseconds, so two derived fields keep the model exact and the
"latest entry" query index-backed: ``createdAtMicros`` (epoch microseconds) and
``statePriority`` (the tie-break rank). Lock writes are one filtered update each, whose result
is checked: acquire is an upsert filtered on "expired or ours", and the unique index on ``key``
turns a lost race or a live holder into a `DuplicateKeyError`, read as "held".

Whose clock decides lock expiry: the runner's by default (``now`` / ``expires_at`` are passed
in, as the `AuditStore` protocol says). With ``lock_clock="server"`` the server's ``$$NOW``
decides instead and only the lease length (``expires_at - now``) is taken from the caller;
acquire is then a findAndModify upsert on ``key`` whose update pipeline keeps a live holder's
values (MongoDB refuses ``$expr`` in an upsert's filter), and the returned owner is the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import pendulum
from pymongo import ASCENDING, DESCENDING, IndexModel, ReadPreference
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from flamingock_provider.engine.errors import AuditStoreError
from flamingock_provider.engine.model import (
    CAMEL_FIELDS,
    AuditEntry,
    AuditState,
    LockRecord,
    Recovery,
    TxStrategy,
)

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.collection import Collection
    from pymongo.database import Database

T = TypeVar("T")

DEFAULT_AUDIT_COLLECTION = "flamingockAuditLog"
DEFAULT_LOCK_COLLECTION = "flamingockLock"
DEFAULT_WRITE_CONCERN: Mapping[str, Any] = {"w": "majority", "j": True}
READ_CONCERNS = ("local", "available", "majority", "linearizable")
READ_PREFERENCES = {
    "primary": ReadPreference.PRIMARY,
    "primarypreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondary": ReadPreference.SECONDARY,
    "secondarypreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}
LOCK_CLOCKS = ("runner", "server")
AUDIT_UNIQUE_KEYS = ("executionId", "changeId", "state")
LATEST_KEYS = (
    ("changeId", ASCENDING),
    ("createdAtMicros", DESCENDING),
    ("statePriority", DESCENDING),
)
BATCH_SIZE = 100_000
"""Documents per reply: large, so a snapshot comes back in one round trip (up to 16 MiB)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_REQUIRED = ("executionId", "changeId", "state")


class MongoAuditStore:
    """`AuditStore` on a MongoDB database (replica set, sharded cluster, or standalone).

    :param client: a ``pymongo.MongoClient`` (or a compatible one, e.g. mongomock-ng's).
    :param database: the database holding both collections.
    :param audit_collection: history collection name.
    :param lock_collection: lock collection name.
    :param auto_create: create the collections and indexes; when false, validate them only.
    :param read_concern: read concern level of every read (``majority``).
    :param write_concern: ``w``, ``j`` and ``wtimeout`` of every write (``majority``, journal).
    :param read_preference: ``primary`` unless told otherwise (see docs: keep it for runners).
    :param lock_clock: ``runner`` (times passed in decide) or ``server`` (``$$NOW`` decides).
    :param cluster: what identifies the deployment and user, so a target system on the same one
        can share this client's transactions; None when only the same client object counts.
    :param location: where the store is, for messages; must hold no secret.
    :param owns_client: close ``client`` in `close`.
    :param redact: strings (passwords) scrubbed from error messages.
    """

    def __init__(
        self,
        client: MongoClient[Any],
        database: str,
        *,
        audit_collection: str = DEFAULT_AUDIT_COLLECTION,
        lock_collection: str = DEFAULT_LOCK_COLLECTION,
        auto_create: bool = True,
        read_concern: str = "majority",
        write_concern: Mapping[str, Any] = DEFAULT_WRITE_CONCERN,
        read_preference: str = "primary",
        lock_clock: str = "runner",
        cluster: str | None = None,
        location: str = "",
        owns_client: bool = False,
        redact: Sequence[str] = (),
    ) -> None:
        if read_concern not in READ_CONCERNS:
            raise ValueError(f"read_concern must be one of {READ_CONCERNS}, got {read_concern!r}")
        if read_preference.lower() not in READ_PREFERENCES:
            raise ValueError(f"unknown read_preference {read_preference!r}")
        if lock_clock not in LOCK_CLOCKS:
            raise ValueError(f"lock_clock must be one of {LOCK_CLOCKS}, got {lock_clock!r}")
        self.client = client
        self.database_name = database
        self.audit_collection_name = audit_collection
        self.lock_collection_name = lock_collection
        self.auto_create = auto_create
        self.read_concern = read_concern
        self.write_concern = dict(write_concern)
        self.read_preference = read_preference
        self.lock_clock = lock_clock
        self.cluster = cluster
        self.location = location
        self.owns_client = owns_client
        self._redact = tuple(s for s in redact if s)
        self._ready = False

    # -- identity -------------------------------------------------------------------------

    @property
    def description(self) -> str:
        where = f"{self.location.rstrip('/')}/" if self.location else ""
        return (
            f"MongoDB audit store {where}{self.database_name} (collections "
            f"{self.audit_collection_name}, {self.lock_collection_name})"
        )

    @cached_property
    def database(self) -> Database[Any]:
        """The audit database with this store's concerns and timezone-aware dates."""
        from bson.codec_options import CodecOptions

        return self.client.get_database(
            self.database_name,
            codec_options=CodecOptions(tz_aware=True, tzinfo=timezone.utc),
            read_concern=ReadConcern(self.read_concern),
            write_concern=WriteConcern(**self.write_concern),
            read_preference=READ_PREFERENCES[self.read_preference.lower()],
        )

    @property
    def audit(self) -> Collection[Any]:
        return self.database[self.audit_collection_name]

    @property
    def lock(self) -> Collection[Any]:
        return self.database[self.lock_collection_name]

    def shares_client_with(self, client: object) -> bool:
        """Whether ``client`` is this store's own client (so they can share a transaction)."""
        return client is self.client

    # -- collections ----------------------------------------------------------------------

    def initialize(self) -> None:
        """Create the indexes (two round trips, idempotent) or, without auto_create, check them.

        ``createIndexes`` also creates a missing collection. When it refuses because equivalent
        indexes exist under other names, the existing ones are checked instead.
        """
        if self._ready:
            return
        if self.auto_create:
            try:
                self.audit.create_indexes(
                    [
                        IndexModel(
                            [(k, ASCENDING) for k in AUDIT_UNIQUE_KEYS],
                            unique=True,
                            name=f"{self.audit_collection_name}_uq",
                        ),
                        IndexModel(list(LATEST_KEYS), name=f"{self.audit_collection_name}_latest"),
                    ]
                )
                self.lock.create_indexes(
                    [
                        IndexModel(
                            [("key", ASCENDING)],
                            unique=True,
                            name=f"{self.lock_collection_name}_key",
                        )
                    ]
                )
            except OperationFailure as err:
                self._validate(because=self._detail(err))
            except PyMongoError as err:
                raise self._error("initialize", err) from err
        else:
            self._validate()
        self._ready = True

    def is_initialized(self) -> bool:
        names = (self.audit_collection_name, self.lock_collection_name)
        pattern = "^(" + "|".join(re.escape(n) for n in names) + ")$"
        found = self._guard(
            "is_initialized",
            lambda: set(self.database.list_collection_names(filter={"name": {"$regex": pattern}})),
        )
        return set(names) <= found

    def _validate(self, because: str | None = None) -> None:
        """Check both collections exist with their unique indexes; name what is missing."""
        required = [
            (self.audit_collection_name, AUDIT_UNIQUE_KEYS),
            (self.lock_collection_name, ("key",)),
        ]
        for name, keys in required:
            indexes = self._indexes(name)
            spec = ", ".join(f"{k}: 1" for k in keys)
            hint = (
                f"db.{name}.createIndex({{{spec}}}, {{unique: true}})"
                if indexes
                else f"db.createCollection('{name}') and db.{name}.createIndex({{{spec}}}, "
                "{unique: true})"
            )
            if indexes and any(
                ix.get("unique") and set(dict(ix["key"])) == set(keys) for ix in indexes
            ):
                continue
            problem = (
                f"collection '{name}' lacks a unique index on ({', '.join(keys)})"
                if indexes
                else f"collection '{name}' does not exist"
            )
            why = f" (creating it failed: {because})" if because else " and auto_create is off"
            raise AuditStoreError(
                f"{self.description}: {problem}{why}. Run {hint} (see docs/audit-stores/"
                "mongodb.md)" + ("" if because else ", or set auto_create=true") + ".",
                store=self.description,
                operation="validate",
            )

    def _indexes(self, name: str) -> list[Mapping[str, Any]]:
        """The collection's indexes; none when it does not exist."""
        return self._guard("validate", lambda: list(self.database[name].list_indexes()))

    # -- history --------------------------------------------------------------------------

    def read_latest(self) -> Mapping[str, AuditEntry]:
        """One aggregation: sort on the ``_latest`` index, keep the first entry of each change."""
        pipeline: list[dict[str, Any]] = [
            {"$sort": dict(LATEST_KEYS)},
            {"$group": {"_id": "$changeId", "doc": {"$first": "$$ROOT"}}},
            {"$replaceRoot": {"newRoot": "$doc"}},
        ]

        def run() -> dict[str, AuditEntry]:
            docs = self.audit.aggregate(pipeline, batchSize=BATCH_SIZE)
            return {doc["changeId"]: self._entry(doc) for doc in docs}

        return self._guard("read_latest", run)

    def read_history(self, since: datetime | None = None) -> list[AuditEntry]:
        query = {} if since is None else {"createdAtMicros": {"$gte": micros(since)}}
        order = [("createdAtMicros", ASCENDING), ("statePriority", ASCENDING), ("_id", ASCENDING)]

        def run() -> list[AuditEntry]:
            docs = self.audit.find(query, sort=order, batch_size=BATCH_SIZE)
            return [self._entry(doc) for doc in docs]

        return self._guard("read_history", run)

    def append(self, entry: AuditEntry, transaction: object | None = None) -> None:
        """Insert one document; with ``transaction`` (a session of this store's client, in a
        transaction), inside it. A duplicate (execution, change, state) raises."""
        if transaction is not None and not (
            getattr(transaction, "client", None) is self.client
            and getattr(transaction, "in_transaction", False)
        ):
            raise AuditStoreError(
                f"{self.description}: a shared transaction must be a session of the audit "
                "store's own client with a transaction in progress",
                store=self.description,
                operation="append",
            )

        def write() -> None:
            result = self.audit.insert_one(document(entry), session=transaction)  # type: ignore[arg-type]
            if not result.acknowledged or result.inserted_id is None:
                raise AuditStoreError(
                    f"{self.description}: audit insert for '{entry.change_id}' was not "
                    "acknowledged; use a write concern with w >= 1",
                    store=self.description,
                    operation="append",
                )

        try:
            self._guard("append", write)
        except AuditStoreError as err:
            if isinstance(err.__cause__, DuplicateKeyError):
                raise AuditStoreError(
                    f"{self.description}: duplicate audit entry (execution "
                    f"{entry.execution_id}, change '{entry.change_id}', {entry.state.value})",
                    store=self.description,
                    operation="append",
                ) from err.__cause__
            raise

    # -- lock -----------------------------------------------------------------------------

    def lock_acquire(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        """One checked write: a filtered upsert (runner clock) or a conditional findAndModify
        upsert (server clock). Held by someone else: the filter matches nothing and the insert
        it falls back to hits the unique ``key`` index, or the condition keeps their values."""
        if self.lock_clock == "server":
            return self._guard(
                "lock_acquire", lambda: self._acquire_by_server_clock(key, owner, now, expires_at)
            )
        query = {"key": key, "$or": [{"expiresAtMicros": {"$lte": micros(now)}}, {"owner": owner}]}
        update = {"$set": {**self._holder(owner), **_expiry(expires_at)}}

        def attempt() -> bool:
            try:
                result = self.lock.update_one(query, update, upsert=True)
            except DuplicateKeyError:
                return False
            return result.matched_count == 1 or result.upserted_id is not None

        return self._guard("lock_acquire", attempt)

    def _acquire_by_server_clock(
        self, key: str, owner: str, now: datetime, expires_at: datetime
    ) -> bool:
        """``$$NOW`` decides. MongoDB refuses ``$expr`` in an upsert's filter, so the filter is
        the key alone and the update pipeline keeps a live holder's values; the document it
        returns tells who holds the lock."""
        from pymongo import ReturnDocument

        free = {"$or": [{"$lte": ["$expiresAt", "$$NOW"]}, {"$eq": ["$owner", owner]}]}
        ours = {"status": "LOCK_HELD", "owner": owner, **self._server_expiry(now, expires_at)}
        pipeline = [
            {"$set": {name: {"$cond": [free, value, f"${name}"]} for name, value in ours.items()}}
        ]
        try:
            doc = self.lock.find_one_and_update(
                {"key": key},
                pipeline,
                projection={"owner": 1},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # another runner inserted the record first
        return doc is not None and doc.get("owner") == owner

    def lock_extend(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        update: Any = (
            [{"$set": self._server_expiry(now, expires_at)}]
            if self.lock_clock == "server"
            else {"$set": _expiry(expires_at)}
        )
        return self._guard(
            "lock_extend",
            lambda: self.lock.update_one({"key": key, "owner": owner}, update).matched_count == 1,
        )

    def lock_release(self, key: str, owner: str) -> None:
        self._guard("lock_release", lambda: self.lock.delete_one({"key": key, "owner": owner}))

    def lock_holder(self, key: str) -> LockRecord | None:
        doc = self._guard("lock_holder", lambda: self.lock.find_one({"key": key}))
        if doc is None:
            return None
        expires = (
            from_micros(doc["expiresAtMicros"])
            if isinstance(doc.get("expiresAtMicros"), int)
            else _aware(doc["expiresAt"])
        )
        return LockRecord(key, doc["owner"], expires, doc.get("status", "LOCK_HELD"))

    def close(self) -> None:
        if self.owns_client:
            self.client.close()

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _holder(owner: str) -> dict[str, Any]:
        return {"status": "LOCK_HELD", "owner": owner}

    @staticmethod
    def _server_expiry(now: datetime, expires_at: datetime) -> dict[str, Any]:
        """``$$NOW`` + the lease, as a date and as microseconds (the server clock decides)."""
        lease_ms = max((micros(expires_at) - micros(now)) // 1000, 0)
        end = {"$add": ["$$NOW", lease_ms]}
        return {"expiresAt": end, "expiresAtMicros": {"$multiply": [{"$toLong": end}, 1000]}}

    def _guard(self, operation: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except AuditStoreError:
            raise
        except PyMongoError as err:
            raise self._error(operation, err) from err

    def _detail(self, err: BaseException) -> str:
        detail = (str(err).strip().splitlines() or [""])[0][:300]
        for secret in self._redact:
            detail = detail.replace(secret, "***")
        return f"{type(err).__name__}: {detail}"

    def _error(self, operation: str, err: BaseException) -> AuditStoreError:
        return AuditStoreError(
            f"{self.description}: {operation} failed: {self._detail(err)}",
            store=self.description,
            operation=operation,
        )

    def _entry(self, doc: Mapping[str, Any]) -> AuditEntry:
        try:
            missing = [name for name in _REQUIRED if name not in doc]
            if missing:
                raise KeyError(", ".join(missing))
            created = (
                from_micros(doc["createdAtMicros"])
                if isinstance(doc.get("createdAtMicros"), int)
                else _aware(doc["createdAt"])
            )
            fields: dict[str, Any] = {
                name: doc[camel]
                for name, camel in CAMEL_FIELDS.items()
                if camel in doc and doc[camel] is not None
            }
            fields.update(
                created_at=created,
                state=AuditState(doc["state"]),
                tx_strategy=TxStrategy(doc.get("txStrategy") or "NON_TX"),
                recovery_strategy=Recovery(doc.get("recoveryStrategy") or "MANUAL_INTERVENTION"),
                metadata=dict(doc.get("metadata") or {}),
                error_trace=doc.get("errorTrace"),
                execution_millis=int(doc.get("executionMillis") or 0),
                system_change=bool(doc.get("systemChange", False)),
                transaction_flag=bool(doc.get("transactionFlag", False)),
            )
            return AuditEntry(**fields)
        except (ValueError, KeyError, TypeError) as err:
            raise AuditStoreError(
                f"{self.description}: audit document of change '{doc.get('changeId')}' "
                f"(execution {doc.get('executionId')}) is unreadable: {type(err).__name__}: "
                f"{err}. It was not written by flamingock_provider; fix or remove it.",
                store=self.description,
                operation="read",
            ) from err


def document(entry: AuditEntry) -> dict[str, Any]:
    """The audit document: Flamingock's camelCase record, BSON date, and the two sort fields."""
    doc = entry.as_json()
    doc["createdAt"] = entry.created_at
    doc["createdAtMicros"] = micros(entry.created_at)
    doc["statePriority"] = entry.state.priority
    return doc


def micros(value: datetime) -> int:
    """Epoch microseconds of a timezone-aware datetime (exact, unlike a BSON date)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC")
    delta = value.astimezone(timezone.utc).replace(tzinfo=None) - _EPOCH_NAIVE
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The timezone-aware UTC datetime of epoch microseconds."""
    result: datetime = pendulum.instance(_EPOCH + timedelta(microseconds=value), tz="UTC")
    return result


def _expiry(expires_at: datetime) -> dict[str, Any]:
    return {"expiresAt": expires_at, "expiresAtMicros": micros(expires_at)}


def _aware(value: datetime) -> datetime:
    result: datetime = pendulum.instance(
        value if value.tzinfo else value.replace(tzinfo=timezone.utc), tz="UTC"
    )
    return result
