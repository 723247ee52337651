"""The narrow protocol between the engine and an audit store.

A store knows how to persist entries and the lock record; it makes no decision. Every write
checks what the database answered: a write that did not happen raises `AuditStoreError`
(or returns ``False`` for the lock calls, whose refusal is an expected outcome).
Times are passed in by the caller, so the store never reads a clock of its own unless its doc
says so; that keeps lock expiry testable and the clock that decides it explicit.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from flamingock_provider.engine.model import AuditEntry, LockRecord


@runtime_checkable
class AuditStore(Protocol):
    """Persistence for audit history and the pipeline lock."""

    @property
    def description(self) -> str:
        """A human label for messages (kind, location, table names) that holds no secret."""
        ...

    def initialize(self) -> None:
        """Create the store's tables when auto-creating, else validate them.

        Idempotent. Raises `AuditStoreError` naming what is missing or malformed.
        """
        ...

    def is_initialized(self) -> bool:
        """Whether the store's tables exist; writes nothing (used by dry runs)."""
        ...

    def read_latest(self) -> Mapping[str, AuditEntry]:
        """The latest entry of every change (tie-break of `model.latest_entries`), one read."""
        ...

    def read_history(self, since: datetime | None = None) -> list[AuditEntry]:
        """Every entry (created at or after ``since``), oldest first."""
        ...

    def append(self, entry: AuditEntry, transaction: object | None = None) -> None:
        """Append one entry; with ``transaction``, inside that store-specific transaction.

        ``transaction`` is the handle a target system hands out when it shares the store's
        database (`TxStrategy.TX_SHARED`). A duplicate (execution, change, state) raises.
        """
        ...

    def lock_acquire(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        """Take the lock if free, expired at ``now``, or already ours; one checked write."""
        ...

    def lock_extend(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        """Move our lease to ``expires_at``; ``False`` when the record is no longer ours."""
        ...

    def lock_release(self, key: str, owner: str) -> None:
        """Delete the lock record if it is still ours; no error when it is not."""
        ...

    def lock_holder(self, key: str) -> LockRecord | None:
        """The current lock record, for waiting and for messages."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
