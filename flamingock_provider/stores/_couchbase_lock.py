"""The pipeline lock on Couchbase: one document per key, every write CAS-checked.

- acquire: ``insert`` (the key is free); when the document exists and is expired at ``now`` or
  already ours, a ``replace`` with the CAS just read. ``DocumentExistsException`` or
  ``CasMismatchException`` means another runner wrote first: it won this round.
- extend: a ``replace`` with the CAS of our last lock write (one operation); on a mismatch, read
  the document again and go on only while it is still ours.
- release: a ``remove`` with that CAS, the same way; someone else's record is left alone.

Expiry is decided by the runner's clock: ``now`` and ``expires_at`` come from the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from couchbase.exceptions import (
    CasMismatchException,
    DocumentExistsException,
    DocumentNotFoundException,
)
from couchbase.options import InsertOptions, RemoveOptions, ReplaceOptions

from flamingock_provider.stores._couchbase_docs import (
    lock_document,
    lock_expiry_micros,
    lock_key,
    to_micros,
)

CAS_RETRIES = 20


class CasLock:
    """Lock documents in one collection.

    :param collection: returns the SDK collection holding the lock documents.
    :param options: builds an SDK options object with the store's durability, e.g.
        ``options(ReplaceOptions, cas=cas)``.
    """

    def __init__(self, collection: Callable[[], Any], options: Callable[..., Any]) -> None:
        self._collection = collection
        self._options = options
        self._cas: dict[tuple[str, str], int] = {}  # CAS of our last write per (key, owner)
        self._mutex = threading.Lock()

    def acquire(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        doc, doc_key, now_micros = (
            lock_document(key, owner, expires_at),
            lock_key(key),
            to_micros(now),
        )
        lock = self._collection()
        for _ in range(2):  # a second round when the record vanished between our calls
            try:
                return self._held(
                    key, owner, lock.insert(doc_key, doc, self._options(InsertOptions))
                )
            except DocumentExistsException:
                pass
            try:
                current = lock.get(doc_key)
            except DocumentNotFoundException:
                continue
            body = current.content_as[dict]
            if body.get("owner") != owner and lock_expiry_micros(body) > now_micros:
                return False  # another owner's lease, unexpired
            try:
                replaced = lock.replace(
                    doc_key, doc, self._options(ReplaceOptions, cas=current.cas)
                )
            except (CasMismatchException, DocumentNotFoundException):
                return False  # another runner wrote the record first: it won this round
            return self._held(key, owner, replaced)
        return False

    def extend(self, key: str, owner: str, expires_at: datetime) -> bool:
        doc, doc_key = lock_document(key, owner, expires_at), lock_key(key)
        lock = self._collection()
        with self._mutex:
            cas = self._cas.get((key, owner))
        if cas is not None:
            try:
                replaced = lock.replace(doc_key, doc, self._options(ReplaceOptions, cas=cas))
                return self._held(key, owner, replaced)
            except (CasMismatchException, DocumentNotFoundException):
                pass  # the record changed since our last write: see who holds it now
        for _ in range(CAS_RETRIES):
            try:
                current = lock.get(doc_key)
            except DocumentNotFoundException:
                return self._lost(key, owner)
            if current.content_as[dict].get("owner") != owner:
                return self._lost(key, owner)
            try:
                replaced = lock.replace(
                    doc_key, doc, self._options(ReplaceOptions, cas=current.cas)
                )
            except DocumentNotFoundException:
                return self._lost(key, owner)
            except CasMismatchException:
                continue
            return self._held(key, owner, replaced)
        return self._lost(key, owner)

    def release(self, key: str, owner: str) -> None:
        doc_key, lock = lock_key(key), self._collection()
        with self._mutex:
            cas = self._cas.pop((key, owner), None)
        if cas is not None:
            try:
                lock.remove(doc_key, self._options(RemoveOptions, cas=cas))
                return
            except (CasMismatchException, DocumentNotFoundException):
                pass
        for _ in range(CAS_RETRIES):
            try:
                current = lock.get(doc_key)
            except DocumentNotFoundException:
                return
            if current.content_as[dict].get("owner") != owner:
                return
            try:
                lock.remove(doc_key, self._options(RemoveOptions, cas=current.cas))
                return
            except DocumentNotFoundException:
                return
            except CasMismatchException:
                continue

    def holder(self, key: str) -> dict[str, Any] | None:
        """The lock document of ``key``, or None."""
        try:
            body: dict[str, Any] = self._collection().get(lock_key(key)).content_as[dict]
        except DocumentNotFoundException:
            return None
        return body

    def _held(self, key: str, owner: str, result: Any) -> bool:
        with self._mutex:
            self._cas[(key, owner)] = result.cas
        return True

    def _lost(self, key: str, owner: str) -> bool:
        with self._mutex:
            self._cas.pop((key, owner), None)
        return False
