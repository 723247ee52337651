"""Issues and the audit listing: what needs a person, why, and how a person resolves it.

Resolving never edits history: it appends a manual entry (new execution id, now, the person's
name) that the action table then reads like any other entry.
"""

from __future__ import annotations

import enum
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from flamingock_provider.engine.errors import AuditStoreError, ValidationError
from flamingock_provider.engine.lock import Clock, utc_now
from flamingock_provider.engine.model import (
    AuditEntry,
    AuditState,
    Issue,
    TxStrategy,
    error_summary,
    issues_in,
)
from flamingock_provider.engine.store import AuditStore

DEFAULT_FIX_AUTHOR = "flamingock-cli"


class Resolution(enum.Enum):
    """What a person found in the target system."""

    APPLIED = AuditState.MANUAL_MARKED_AS_APPLIED
    """The change is fully in place: never run it again."""
    ROLLED_BACK = AuditState.MANUAL_MARKED_AS_ROLLED_BACK
    """The change is not in place (or was undone by hand): run it again next time."""

    @classmethod
    def parse(cls, value: str | Resolution) -> Resolution:
        if isinstance(value, Resolution):
            return value
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            raise ValidationError(
                f"Invalid resolution {value!r}: use APPLIED (the change is in place) or "
                "ROLLED_BACK (it is not; apply it again)"
            ) from None


def filter_issues(
    issues: Iterable[Issue],
    stages: Iterable[str] | None = None,
    change_ids: Iterable[str] | None = None,
) -> list[Issue]:
    """Keep the issues of the given stages and/or changes (None keeps all)."""
    stage_set = set(stages) if stages is not None else None
    change_set = set(change_ids) if change_ids is not None else None
    return [
        i
        for i in issues
        if (stage_set is None or i.stage_id in stage_set)
        and (change_set is None or i.change_id in change_set)
    ]


def checked_changes(
    latest: Mapping[str, AuditEntry],
    stages: Iterable[str] | None = None,
    change_ids: Iterable[str] | None = None,
) -> list[str]:
    """The change ids a check covers: those in the store within the filters, sorted."""
    stage_set = set(stages) if stages is not None else None
    if change_ids is not None:
        wanted = set(change_ids)
        return sorted(
            c
            for c in wanted
            if c in latest and (stage_set is None or latest[c].stage_id in stage_set)
        )
    return sorted(c for c, e in latest.items() if stage_set is None or e.stage_id in stage_set)


def scan(
    store: AuditStore,
    stages: Iterable[str] | None = None,
    change_ids: Iterable[str] | None = None,
) -> tuple[list[Issue], list[str]]:
    """Open issues and the change ids checked, in one store read (sensor and trigger).

    A store whose tables do not exist yet has run nothing, so it holds no issue; that is
    checked only when the read fails, keeping the common case to one round trip.
    """
    latest = _latest_or_empty(store)
    issues = filter_issues(issues_in(latest), stages, change_ids)
    return issues, checked_changes(latest, stages, change_ids)


def _latest_or_empty(store: AuditStore) -> Mapping[str, AuditEntry]:
    """The latest entries; empty when the store has no tables yet (nothing ever ran).

    Reads first and asks about the tables only when the read fails, so the common case is
    one round trip and a store missing only its lock table still shows its history.
    """
    try:
        return store.read_latest()
    except AuditStoreError:
        if store.is_initialized():
            raise
        return {}


def list_issues(
    store: AuditStore,
    stages: Iterable[str] | None = None,
    change_ids: Iterable[str] | None = None,
) -> list[Issue]:
    """Open issues in the store (one read), optionally limited to stages / changes."""
    return filter_issues(issues_in(_latest_or_empty(store)), stages, change_ids)


def get_issue(store: AuditStore, change_id: str | None = None) -> Issue | None:
    """One issue: the given change's, or the oldest open one; None when there is none.

    :raises ValidationError: ``change_id`` is unknown to the store, or has no issue.
    """
    latest = _latest_or_empty(store)
    issues = issues_in(latest)
    if change_id is None:
        return min(issues, key=lambda i: i.entry.created_at) if issues else None
    if change_id not in latest:
        raise ValidationError(
            f"Unknown change id '{change_id}': the audit store has no record of it"
        )
    for issue in issues:
        if issue.change_id == change_id:
            return issue
    state = latest[change_id].state.value
    raise ValidationError(f"Change '{change_id}' has no issue (its latest state is {state})")


def fix_issue(
    store: AuditStore,
    change_id: str,
    resolution: str | Resolution,
    *,
    author: str = DEFAULT_FIX_AUTHOR,
    clock: Clock = utc_now,
) -> AuditEntry:
    """Resolve a change's issue by appending a manual entry; returns the entry written.

    Validates everything first (resolution, change known, issue open): on error nothing is
    written. Only changes with an open issue can be fixed, so a typo cannot mark a healthy
    change as applied or send it round again.
    """
    chosen = Resolution.parse(resolution)
    if not author or not author.strip():
        raise ValidationError("author must be a non-empty name")
    issue = get_issue(store, change_id)
    assert issue is not None  # get_issue raises for a change without an issue
    entry = replace(
        issue.entry,
        execution_id=str(uuid.uuid4()),
        state=chosen.value,
        # Never before the issue's own entry (its host's clock may run ahead of ours): a tie
        # is won by the manual state's higher priority.
        created_at=max(clock(), issue.entry.created_at),
        author=author.strip(),
        invoked_method="manual",
        execution_millis=0,
        execution_hostname=socket.gethostname(),
        error_trace=None,
        metadata={
            "resolvedState": issue.state.value,
            "resolvedExecutionId": issue.entry.execution_id,
        },
    )
    store.append(entry)
    return entry


def audit_list(
    store: AuditStore, *, history: bool = False, since: datetime | None = None
) -> list[AuditEntry]:
    """The latest entry per change (default) or the whole history, oldest first."""
    if history:
        try:
            return store.read_history(since)
        except AuditStoreError:
            if store.is_initialized():
                raise
            return []
    latest = _latest_or_empty(store)
    entries = [e for e in latest.values() if since is None or e.created_at >= since]
    return sorted(entries, key=AuditEntry.sort_key)


def guidance(issue: Issue) -> str:
    """What may have happened to the change, how to check, and how to resolve it."""
    entry = issue.entry
    what = {
        AuditState.STARTED: (
            "The run recorded STARTED and never recorded an outcome: the process died "
            "(killed, out of memory, lost its worker) while the change was running."
        ),
        AuditState.FAILED: (
            "The change raised an error and ran outside a transaction: whatever it did before "
            "the error is still in the target system (a partial change)."
        ),
        AuditState.ROLLBACK_FAILED: (
            "The change failed, then its rollback failed too: the target may hold part of the "
            "change and part of the rollback."
        ),
    }.get(entry.state, f"The latest state is {entry.state.value}.")
    if entry.tx_strategy is TxStrategy.TX_SEPARATE_NO_MARKER:
        what += (
            " It ran in a transaction without a marker, so whether the commit happened is unknown."
        )
    lines = [
        f"Change '{issue.change_id}' (stage '{issue.stage_id}', target "
        f"'{entry.target_system_id}', {entry.tx_strategy.value}) is {entry.state.value} since "
        f"{entry.created_at.isoformat()} on {entry.execution_hostname or 'an unknown host'}.",
        what,
        f"Check: look in target system '{entry.target_system_id}' for the effects of "
        f"{entry.invoked_class or issue.change_id}.apply and the task logs of execution "
        f"{entry.execution_id}.",
        f"If the change is fully in place: audit fix -c {issue.change_id} -r APPLIED",
        f"If it is not (undo any partial effects first): audit fix -c {issue.change_id} "
        "-r ROLLED_BACK  (it is applied again on the next run)",
    ]
    error = error_summary(entry.error_trace)
    if error:
        lines.insert(2, f"Error: {error}")
    return "\n".join(lines)
