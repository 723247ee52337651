"""Small instruments the reliability tests put on a store: lock attempts, history consistency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flamingock_provider.engine.model import AuditEntry, AuditState, latest_entries


@dataclass(frozen=True)
class LockAttempt:
    """One `AuditStore.lock_acquire` call: the caller's ``now`` and whether it got the lock."""

    now: datetime
    acquired: bool


def record_lock_attempts(store: Any) -> list[LockAttempt]:
    """Record every lock acquisition ``store`` is asked for from now on (instance-level wrap, so
    the store keeps its type and a target still recognises its own database).
    """
    attempts: list[LockAttempt] = []
    acquire = store.lock_acquire

    def recording(key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        acquired = bool(acquire(key, owner, now, expires_at))
        attempts.append(LockAttempt(now, acquired))
        return acquired

    store.lock_acquire = recording
    return attempts


def first_acquisition(attempts: Sequence[LockAttempt]) -> tuple[int, datetime | None]:
    """How many attempts were refused before the first success, and that success's ``now``."""
    for refused, attempt in enumerate(attempts):
        if attempt.acquired:
            return refused, attempt.now
    return len(attempts), None


def history_problems(history: Sequence[AuditEntry], latest: dict[str, AuditEntry]) -> list[str]:
    """What is inconsistent in a store's history and latest-entry view (empty when sound).

    Sound means: every outcome (APPLIED, FAILED, ROLLED_BACK, ROLLBACK_FAILED) of an execution
    follows a STARTED of the same execution and change, and the latest view is exactly what
    the history reduces to.
    """
    problems: list[str] = []
    started = {(e.execution_id, e.change_id) for e in history if e.state is AuditState.STARTED}
    outcomes = (
        AuditState.APPLIED,
        AuditState.FAILED,
        AuditState.ROLLED_BACK,
        AuditState.ROLLBACK_FAILED,
    )
    for entry in history:
        if entry.state in outcomes and (entry.execution_id, entry.change_id) not in started:
            problems.append(
                f"{entry.state.value} of {entry.change_id} (execution {entry.execution_id}) "
                "without STARTED"
            )
    expected = latest_entries(history)
    if set(expected) != set(latest):
        problems.append(f"latest view holds {sorted(latest)}, history {sorted(expected)}")
    for change_id in sorted(set(expected) & set(latest)):
        want, got = expected[change_id], latest[change_id]
        if (want.execution_id, want.state) != (got.execution_id, got.state):
            problems.append(
                f"latest of {change_id} is {got.state.value} ({got.execution_id}), history "
                f"says {want.state.value} ({want.execution_id})"
            )
    return problems
