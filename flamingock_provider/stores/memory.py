"""An in-memory audit store for unit tests, dry runs and users testing their own change units.

Thread-safe (one mutex), so lock contention between threads behaves as on a real store.
Nothing survives the process.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime

from flamingock_provider.engine.errors import AuditStoreError
from flamingock_provider.engine.model import AuditEntry, LockRecord, latest_entries


class PendingAudit:
    """Entries written inside a target transaction; they join the store only on commit."""

    def __init__(self, store: MemoryAuditStore) -> None:
        self.store = store
        self.entries: list[AuditEntry] = []

    def commit(self) -> None:
        for entry in self.entries:
            self.store.append(entry)
        self.entries.clear()


class MemoryAuditStore:
    """`AuditStore` kept in process memory."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._entries: list[AuditEntry] = []
        self._keys: set[tuple[str, str, str]] = set()
        self._locks: dict[str, LockRecord] = {}
        self._mutex = threading.Lock()
        self.initialized = False

    @property
    def description(self) -> str:
        return f"memory audit store '{self.name}'"

    def initialize(self) -> None:
        self.initialized = True

    def is_initialized(self) -> bool:
        return self.initialized

    def read_latest(self) -> Mapping[str, AuditEntry]:
        with self._mutex:
            return latest_entries(self._entries)

    def read_history(self, since: datetime | None = None) -> list[AuditEntry]:
        with self._mutex:
            entries = [e for e in self._entries if since is None or e.created_at >= since]
        return sorted(entries, key=AuditEntry.sort_key)

    def append(self, entry: AuditEntry, transaction: object | None = None) -> None:
        if transaction is not None:
            if not isinstance(transaction, PendingAudit) or transaction.store is not self:
                raise AuditStoreError(
                    f"{self.description}: cannot write inside a foreign transaction",
                    store=self.description,
                    operation="append",
                )
            transaction.entries.append(entry)
            return
        key = (entry.execution_id, entry.change_id, entry.state.value)
        with self._mutex:
            if key in self._keys:
                raise AuditStoreError(
                    f"{self.description}: duplicate audit entry {key}",
                    store=self.description,
                    operation="append",
                )
            self._keys.add(key)
            self._entries.append(entry)

    def lock_acquire(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        with self._mutex:
            current = self._locks.get(key)
            if current is None or current.expires_at <= now or current.owner == owner:
                self._locks[key] = LockRecord(key, owner, expires_at)
                return True
            return False

    def lock_extend(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        with self._mutex:
            current = self._locks.get(key)
            if current is None or current.owner != owner:
                return False
            self._locks[key] = LockRecord(key, owner, expires_at)
            return True

    def lock_release(self, key: str, owner: str) -> None:
        with self._mutex:
            current = self._locks.get(key)
            if current is not None and current.owner == owner:
                del self._locks[key]

    def lock_holder(self, key: str) -> LockRecord | None:
        with self._mutex:
            return self._locks.get(key)

    def close(self) -> None:
        """Nothing to release."""
