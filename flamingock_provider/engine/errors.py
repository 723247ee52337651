"""The exception hierarchy: one root, each subclass carrying the facts a person needs.

Only the Airflow layer (operator, sensor, trigger) turns these into Airflow exceptions, always
with ``raise ... from err`` so the cause survives.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flamingock_provider.engine.model import Issue
    from flamingock_provider.engine.result import RunResult


class FlamingockError(Exception):
    """Root of every error this package raises on purpose."""


class ValidationError(FlamingockError):
    """Bad change units or configuration, found before anything is written."""


class AuditStoreError(FlamingockError):
    """The audit store is unreachable, refused a write, or holds an unexpected schema."""

    def __init__(self, message: str, *, store: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.store = store
        self.operation = operation


class TargetSystemError(FlamingockError):
    """A target system could not be opened or prepared (unreachable, missing marker table)."""

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(message)
        self.target = target


class LockError(FlamingockError):
    """The pipeline lock could not be acquired in time, or was lost while running."""

    def __init__(
        self,
        message: str,
        *,
        key: str,
        holder: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.holder = holder
        self.expires_at = expires_at


class RunError(FlamingockError):
    """A run stopped; ``result`` holds what had happened up to that point."""

    def __init__(self, message: str, *, result: RunResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class ChangeFailedError(RunError):
    """A change unit raised; its stage stopped and the pipeline with it."""

    def __init__(
        self, message: str, *, change_id: str, stage: str, result: RunResult | None = None
    ) -> None:
        super().__init__(message, result=result)
        self.change_id = change_id
        self.stage = stage


class ManualInterventionRequired(RunError):
    """A stage holds issues: none of its changes ran until a person resolves them."""

    def __init__(
        self, stage: str, issues: Sequence[Issue], *, result: RunResult | None = None
    ) -> None:
        self.stage = stage
        self.issues = tuple(issues)
        super().__init__(self._message(stage, self.issues), result=result)

    @staticmethod
    def _message(stage: str, issues: Sequence[Issue]) -> str:
        lines = [
            f"Stage '{stage}' is blocked by {len(issues)} issue(s); none of its changes ran.",
        ]
        for issue in issues:
            lines.append(f"  - {issue.describe()}")
        lines.append(
            "Check each change in its target system, then resolve it with "
            "`flamingock-airflow audit fix -c <change-id> -r APPLIED|ROLLED_BACK` "
            "(APPLIED: the change is fully in place; ROLLED_BACK: it is not, run it again)."
        )
        return "\n".join(lines)
