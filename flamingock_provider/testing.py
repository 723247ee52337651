"""Helpers for testing change units without a database: an in-memory target system.

Use it with `stores.memory.MemoryAuditStore` to run a pipeline in a unit test::

    store = MemoryAuditStore()
    target = MemoryTargetSystem("orders-db")
    stages = [Stage("orders", "my_changes")]
    pipeline = load_pipeline(stages, {target.id: target.injectable_names()})
    PipelineRunner(store, pipeline, [target]).run()
    assert target.data["orders"] == ...

The target injects ``data`` (a dict standing for the target's database). Inside a transaction
``data`` is a copy that replaces the original only on commit, so a failed transactional change
leaves nothing behind, as on a real database.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flamingock_provider.engine.model import TxStrategy
from flamingock_provider.engine.store import AuditStore
from flamingock_provider.stores.memory import MemoryAuditStore, PendingAudit

__all__ = ["MemoryAuditStore", "MemoryTargetSystem"]


class MemoryTargetSystem:
    """A target system held in memory, with transactions and markers.

    :param id: the target system id changes refer to.
    :param transactions: whether it offers transactions at all.
    :param shared_with: an audit store treated as living in the same database (`TX_SHARED`).
    :param markers: keep markers for `TX_SEPARATE_WITH_MARKER` (else `TX_SEPARATE_NO_MARKER`).
    :param before_commit: called just before a commit; raise from it to simulate a failed commit.
    """

    def __init__(
        self,
        id: str,
        *,
        transactions: bool = True,
        shared_with: MemoryAuditStore | None = None,
        markers: bool = True,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self._id = id
        self.transactions = transactions
        self.shared_with = shared_with
        self.markers_enabled = markers
        self.before_commit = before_commit
        self.data: dict[str, Any] = {}
        self.markers: set[tuple[str, str]] = set()
        self.commits = 0

    @property
    def id(self) -> str:
        return self._id

    def injectable_names(self) -> frozenset[str]:
        return frozenset({"data"})

    def open(self, store: AuditStore) -> _MemorySession:
        return _MemorySession(self, store)


class _MemoryTransaction:
    def __init__(self, data: dict[str, Any], audit: PendingAudit | None) -> None:
        self.data = data
        self.audit = audit
        self.markers: set[tuple[str, str]] = set()

    @property
    def injectables(self) -> Mapping[str, object]:
        return {"data": self.data}

    @property
    def audit_handle(self) -> object | None:
        return self.audit

    def write_marker(self, change_id: str, execution_id: str) -> None:
        self.markers.add((change_id, execution_id))


class _MemorySession:
    def __init__(self, target: MemoryTargetSystem, store: AuditStore) -> None:
        self.target = target
        self.store = store

    def strategy(self, transactional: bool) -> TxStrategy:
        if not (transactional and self.target.transactions):
            return TxStrategy.NON_TX
        if self.target.shared_with is not None and self.target.shared_with is self.store:
            return TxStrategy.TX_SHARED
        if self.target.markers_enabled:
            return TxStrategy.TX_SEPARATE_WITH_MARKER
        return TxStrategy.TX_SEPARATE_NO_MARKER

    def prepare(self) -> None:
        """Nothing to create."""

    @contextmanager
    def resources(self) -> Iterator[Mapping[str, object]]:
        yield {"data": self.target.data}

    @contextmanager
    def transaction(self) -> Iterator[_MemoryTransaction]:
        shared = self.target.shared_with
        audit = PendingAudit(shared) if shared is not None and shared is self.store else None
        tx = _MemoryTransaction(copy.deepcopy(self.target.data), audit)
        yield tx  # an exception here discards the copy: that is the rollback
        if self.target.before_commit is not None:
            self.target.before_commit()
        self.target.data = tx.data
        self.target.markers |= tx.markers
        self.target.commits += 1
        if audit is not None:
            audit.commit()

    def has_marker(self, change_id: str, execution_id: str) -> bool:
        return (change_id, execution_id) in self.target.markers

    def clear_marker(self, change_id: str, execution_id: str) -> None:
        self.target.markers.discard((change_id, execution_id))

    def close(self) -> None:
        """Nothing to release."""
