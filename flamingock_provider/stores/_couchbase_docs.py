"""The Couchbase audit store's documents and keys: pure functions, no SDK, no I/O.

Documents in the audit collection:

=====================================  =========================================================
key                                    body
=====================================  =========================================================
``latest``                             ``{"type": "flamingockLatest", "changes": {<changeId>:
                                       <entry>}}``: the latest entry of every change
``change::<changeId>``                 ``{"changeId", "entries": [[<entry key>,
                                       <createdAtMicros>], ...]}``: the change's history index
``entry::<sha256>``                    one entry (the hash of executionId, changeId, state)
=====================================  =========================================================

An entry is Flamingock's camelCase record (`AuditEntry.as_json`) with ``createdAt`` in epoch
milliseconds (Flamingock's type where the store has no native time) and ``createdAtMicros``, the
exact time, which orders entries and round-trips them. The lock document (lock collection, key
``lock::<key>``) is ``{"key", "status", "owner", "expiresAt" (ms), "expiresAtMicros"}``.
A change id or lock key that would make a key over 250 bytes (or holds unprintable characters)
is replaced by its SHA-256 with ``#`` after the prefix (``change#<hex>``), which no readable key
can collide with.
"""

from __future__ import annotations

import calendar
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pendulum

from flamingock_provider.engine.model import AuditEntry, AuditState, Recovery, TxStrategy

LATEST_KEY = "latest"
MAX_KEY_BYTES = 250
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_micros(moment: datetime) -> int:
    """Epoch microseconds of an aware datetime (integer arithmetic: exact)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass timezone-aware UTC")
    return calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond


def from_micros(micros: int) -> datetime:
    """The UTC datetime of epoch microseconds."""
    result: datetime = pendulum.instance(_EPOCH + timedelta(microseconds=micros), tz="UTC")
    return result


def entry_document(entry: AuditEntry) -> dict[str, Any]:
    """The stored form of an entry; JSON all the way down (metadata values become strings
    when they are not JSON, as in the SQL store)."""
    doc = entry.as_json()
    micros = to_micros(entry.created_at)
    doc["createdAt"] = micros // 1000
    doc["createdAtMicros"] = micros
    result: dict[str, Any] = json.loads(json.dumps(doc, default=str))
    return result


def entry_from_document(doc: Mapping[str, Any]) -> AuditEntry:
    """The entry a document holds.

    :raises KeyError, TypeError, ValueError: the document was not written by this store.
    """
    return AuditEntry(
        execution_id=doc["executionId"],
        change_id=doc["changeId"],
        state=AuditState(doc["state"]),
        created_at=from_micros(int(doc["createdAtMicros"])),
        stage_id=doc.get("stageId", ""),
        author=doc.get("author", ""),
        type=doc.get("type", "EXECUTION"),
        invoked_class=doc.get("invokedClass", ""),
        invoked_method=doc.get("invokedMethod", ""),
        source_file=doc.get("sourceFile", ""),
        metadata=dict(doc.get("metadata") or {}),
        execution_millis=int(doc.get("executionMillis", 0)),
        execution_hostname=doc.get("executionHostname", ""),
        error_trace=doc.get("errorTrace"),
        system_change=bool(doc.get("systemChange", False)),
        tx_strategy=TxStrategy(doc["txStrategy"]),
        target_system_id=doc.get("targetSystemId", ""),
        change_order=doc.get("changeOrder", ""),
        recovery_strategy=Recovery(doc["recoveryStrategy"]),
        transaction_flag=bool(doc.get("transactionFlag", False)),
    )


def latest_document(entry: AuditEntry, doc: dict[str, Any]) -> dict[str, Any]:
    """A new ``latest`` document holding one change."""
    return {"type": "flamingockLatest", "changes": {entry.change_id: doc}}


def sort_key(doc: Mapping[str, Any]) -> tuple[int, int]:
    """`AuditEntry.sort_key` of a stored entry: newer first, then the higher state priority."""
    try:
        priority = AuditState(doc.get("state")).priority
    except ValueError:
        priority = 0
    return (int(doc.get("createdAtMicros", 0)), priority)


def digest(*parts: str) -> str:
    """SHA-256 of the parts, unambiguous (JSON-encoded, so no separator can be forged)."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def readable_key(prefix: str, text: str) -> str:
    """``<prefix>::<text>`` when that is a valid key, else ``<prefix>#<sha256>``."""
    key = f"{prefix}::{text}"
    if len(key.encode()) <= MAX_KEY_BYTES and text.isprintable():
        return key
    return f"{prefix}#{digest(text)}"


def entry_key(entry: AuditEntry) -> str:
    """One key per (execution, change, state): inserting it is the uniqueness check."""
    return f"entry::{digest(entry.execution_id, entry.change_id, entry.state.value)}"


def index_key(change_id: str) -> str:
    return readable_key("change", change_id)


def lock_key(key: str) -> str:
    return readable_key("lock", key)


def marker_key(change_id: str, execution_id: str) -> str:
    """A target's marker document for one execution of a change."""
    return f"marker::{digest(change_id, execution_id)}"


def quote(component: str) -> str:
    """A sub-document path component in backticks (a literal backtick is doubled)."""
    return "`" + component.replace("`", "``") + "`"


def latest_path(change_id: str) -> str:
    """The sub-document path of a change's slot in ``latest``."""
    return f"changes.{quote(change_id)}"


def lock_document(key: str, owner: str, expires_at: datetime) -> dict[str, Any]:
    micros = to_micros(expires_at)
    return {
        "key": key,
        "status": "LOCK_HELD",
        "owner": owner,
        "expiresAt": micros // 1000,
        "expiresAtMicros": micros,
    }


def lock_expiry_micros(body: Mapping[str, Any]) -> int:
    """The lease end of a lock document (milliseconds when written by another tool)."""
    if "expiresAtMicros" in body:
        return int(body["expiresAtMicros"])
    return int(body["expiresAt"]) * 1000
