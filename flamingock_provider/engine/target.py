"""The protocol between the engine and a target system: what a change unit works on.

A target system is declared in a DAG (cheap, no I/O) and opened by the runner for one run.
The opened session tells the runner which write sequence applies (`TxStrategy`), hands out
the objects injected into ``apply``/``rollback``, runs transactions, and keeps the marker
that lets a crash under `TX_SEPARATE_WITH_MARKER` be resolved without a person.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from flamingock_provider.engine.model import TxStrategy
from flamingock_provider.engine.store import AuditStore


@runtime_checkable
class TargetTransaction(Protocol):
    """One open transaction on a target system."""

    @property
    def injectables(self) -> Mapping[str, object]:
        """Objects offered to the change by parameter name, bound to this transaction."""
        ...

    @property
    def audit_handle(self) -> object | None:
        """The handle passed to `AuditStore.append` for `TX_SHARED`; None otherwise."""
        ...

    def write_marker(self, change_id: str, execution_id: str) -> None:
        """Record, inside this transaction, that the change's execution committed."""
        ...


@runtime_checkable
class TargetSession(Protocol):
    """A target system opened for one run."""

    def strategy(self, transactional: bool) -> TxStrategy:
        """The strongest write sequence this target allows for a (non-)transactional change."""
        ...

    def prepare(self) -> None:
        """Create what the session needs (e.g. the marker table); called under the lock."""
        ...

    def resources(self) -> AbstractContextManager[Mapping[str, object]]:
        """Objects injected into a non-transactional change."""
        ...

    def transaction(self) -> AbstractContextManager[TargetTransaction]:
        """Open a transaction: commit when the block ends, roll back when it raises."""
        ...

    def has_marker(self, change_id: str, execution_id: str) -> bool:
        """Whether the execution's marker committed."""
        ...

    def clear_marker(self, change_id: str, execution_id: str) -> None:
        """Remove a marker once `APPLIED` is recorded (best effort; a leftover is harmless)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class TargetSystem(Protocol):
    """A declared target system: an id, the names it injects, and how to open it."""

    @property
    def id(self) -> str: ...

    def injectable_names(self) -> frozenset[str]:
        """Parameter names ``apply``/``rollback`` may ask for; known without any I/O."""
        ...

    def open(self, store: AuditStore) -> TargetSession:
        """Open the target for one run; ``store`` lets it detect a shared database."""
        ...
