"""The audit model and the pure decisions made from it.

Everything here is immutable data and pure functions: the action table of ARCHITECTURE.md §3
and the "latest entry per change" tie-break live in one place, tested row by row, and every
store and the runner use them rather than deciding for themselves.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class AuditState(enum.Enum):
    """What happened to a change in one execution; declared in priority order (1..7)."""

    STARTED = "STARTED"
    APPLIED = "APPLIED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    MANUAL_MARKED_AS_APPLIED = "MANUAL_MARKED_AS_APPLIED"
    MANUAL_MARKED_AS_ROLLED_BACK = "MANUAL_MARKED_AS_ROLLED_BACK"

    @property
    def priority(self) -> int:
        """Rank used to break a `createdAt` tie: the later step of a sequence ranks higher."""
        return _PRIORITY[self]


_PRIORITY = {state: rank for rank, state in enumerate(AuditState, start=1)}


class TxStrategy(enum.Enum):
    """How a change's execution and its audit records relate to transactions."""

    NON_TX = "NON_TX"
    TX_SHARED = "TX_SHARED"
    TX_SEPARATE_WITH_MARKER = "TX_SEPARATE_WITH_MARKER"
    TX_SEPARATE_NO_MARKER = "TX_SEPARATE_NO_MARKER"

    @property
    def transactional(self) -> bool:
        return self is not TxStrategy.NON_TX


class Recovery(enum.Enum):
    """What to do with a change whose outcome is uncertain or whose partial effects may remain."""

    MANUAL_INTERVENTION = "MANUAL_INTERVENTION"
    ALWAYS_RETRY = "ALWAYS_RETRY"


class Action(enum.Enum):
    """What the runner does with a change, decided from its latest audit entry."""

    APPLY = "APPLY"
    SKIP = "SKIP"
    MANUAL_INTERVENTION = "MANUAL_INTERVENTION"
    CHECK_MARKER = "CHECK_MARKER"
    """A `STARTED` entry written under `TX_SEPARATE_WITH_MARKER`: the target's marker decides."""


EXECUTION_TYPE = "EXECUTION"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One append-only history record, with Flamingock's community field names in snake_case."""

    execution_id: str
    change_id: str
    state: AuditState
    created_at: datetime
    stage_id: str = ""
    author: str = "not-specified"
    type: str = EXECUTION_TYPE
    invoked_class: str = ""
    invoked_method: str = ""
    source_file: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    execution_millis: int = 0
    execution_hostname: str = ""
    error_trace: str | None = None
    system_change: bool = False
    tx_strategy: TxStrategy = TxStrategy.NON_TX
    target_system_id: str = ""
    change_order: str = ""
    recovery_strategy: Recovery = Recovery.MANUAL_INTERVENTION
    transaction_flag: bool = False

    def sort_key(self) -> tuple[datetime, int]:
        """Order for "latest": newer `created_at` first, then the higher state priority."""
        return (self.created_at, self.state.priority)

    def as_json(self) -> dict[str, Any]:
        """Flamingock's camelCase record with JSON types (ISO 8601 UTC time, enum names)."""
        record: dict[str, Any] = {}
        for name, camel in CAMEL_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif name == "metadata":
                value = dict(value)
            record[camel] = value
        return record


# Flamingock's camelCase field names, in the order ARCHITECTURE.md §3 lists them.
CAMEL_FIELDS: Mapping[str, str] = {
    "execution_id": "executionId",
    "stage_id": "stageId",
    "change_id": "changeId",
    "author": "author",
    "created_at": "createdAt",
    "state": "state",
    "type": "type",
    "invoked_class": "invokedClass",
    "invoked_method": "invokedMethod",
    "source_file": "sourceFile",
    "metadata": "metadata",
    "execution_millis": "executionMillis",
    "execution_hostname": "executionHostname",
    "error_trace": "errorTrace",
    "system_change": "systemChange",
    "tx_strategy": "txStrategy",
    "target_system_id": "targetSystemId",
    "change_order": "changeOrder",
    "recovery_strategy": "recoveryStrategy",
    "transaction_flag": "transactionFlag",
}


def latest_entries(entries: Iterable[AuditEntry]) -> dict[str, AuditEntry]:
    """Reduce a history to the latest entry of each change (newer wins, then priority)."""
    latest: dict[str, AuditEntry] = {}
    for entry in entries:
        current = latest.get(entry.change_id)
        if current is None or entry.sort_key() > current.sort_key():
            latest[entry.change_id] = entry
    return latest


_TRANSACTIONAL = frozenset(
    {TxStrategy.TX_SHARED, TxStrategy.TX_SEPARATE_WITH_MARKER, TxStrategy.TX_SEPARATE_NO_MARKER}
)


def decide_action(latest: AuditEntry | None) -> Action:
    """Return what to do with a change given its latest entry (the table of ARCHITECTURE.md §3).

    The recovery strategy used is the one stored in the entry, not the one declared today:
    the entry describes how the uncertain execution was run.
    """
    if latest is None:
        return Action.APPLY
    state = latest.state
    retry = latest.recovery_strategy is Recovery.ALWAYS_RETRY
    if state in (AuditState.APPLIED, AuditState.MANUAL_MARKED_AS_APPLIED):
        return Action.SKIP
    if state in (AuditState.ROLLED_BACK, AuditState.MANUAL_MARKED_AS_ROLLED_BACK):
        return Action.APPLY
    if state is AuditState.FAILED:
        if latest.tx_strategy in _TRANSACTIONAL:
            return Action.APPLY
        return Action.APPLY if retry else Action.MANUAL_INTERVENTION
    if state is AuditState.STARTED and latest.tx_strategy is TxStrategy.TX_SEPARATE_WITH_MARKER:
        return Action.CHECK_MARKER
    # STARTED under any other strategy, ROLLBACK_FAILED: the outcome is uncertain.
    return Action.APPLY if retry else Action.MANUAL_INTERVENTION


def error_summary(trace: str | None, limit: int = 300) -> str | None:
    """The line of a stored traceback that says what went wrong (None when there is none).

    That is the last line, except SQLAlchemy's trailing "(Background on this error at: ...)"
    pointer, which says nothing about the error itself.
    """
    lines = [
        line.strip()
        for line in (trace or "").strip().splitlines()
        if line.strip() and not line.strip().startswith("(Background on this error")
    ]
    return lines[-1][:limit] if lines else None


@dataclass(frozen=True, slots=True)
class Issue:
    """A change whose latest entry needs a person: its action is MANUAL_INTERVENTION."""

    change_id: str
    stage_id: str
    entry: AuditEntry

    @property
    def state(self) -> AuditState:
        return self.entry.state

    def describe(self) -> str:
        """One line: which change, in which state, since when, and the error if any."""
        when = self.entry.created_at.isoformat()
        text = (
            f"change '{self.change_id}' (stage '{self.stage_id}') is {self.state.value} "
            f"since {when} ({self.entry.tx_strategy.value}, execution {self.entry.execution_id})"
        )
        error = error_summary(self.entry.error_trace, 200)
        if error:
            text += f": {error}"
        return text


def issues_in(latest: Mapping[str, AuditEntry]) -> list[Issue]:
    """Every change in a latest-entry snapshot that needs manual intervention."""
    found = [
        Issue(change_id, entry.stage_id, entry)
        for change_id, entry in latest.items()
        if decide_action(entry) is Action.MANUAL_INTERVENTION
    ]
    return sorted(found, key=lambda issue: (issue.stage_id, issue.change_id))


@dataclass(frozen=True, slots=True)
class LockRecord:
    """The lock record: who holds the key, and until when."""

    key: str
    owner: str
    expires_at: datetime
    status: str = "LOCK_HELD"
