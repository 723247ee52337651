"""What a run did, change by change: returned by the runner, summarised into the XCom."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.Enum):
    """What happened to one change in one run."""

    APPLIED = "APPLIED"
    SKIPPED = "SKIPPED"
    RECOVERED = "RECOVERED"
    """Found committed through its marker after a crash: recorded APPLIED, not run again."""
    FAILED = "FAILED"
    PENDING = "PENDING"
    """Dry run: would be applied."""
    BLOCKED = "BLOCKED"
    """An issue: needs a person before its stage can run."""
    NOT_RUN = "NOT_RUN"
    """Stopped before it: an earlier failure or block, or a lost lock."""


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    change_id: str
    stage: str
    outcome: Outcome
    duration_ms: int = 0
    tx_strategy: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of every change the run looked at, in pipeline order."""

    execution_id: str
    outcomes: tuple[ChangeOutcome, ...]
    dry_run: bool = False
    lock_taken: bool = False
    issues: tuple[str, ...] = field(default_factory=tuple)

    def ids(self, *outcomes: Outcome) -> list[str]:
        return [o.change_id for o in self.outcomes if o.outcome in outcomes]

    @property
    def applied(self) -> list[str]:
        return self.ids(Outcome.APPLIED)

    @property
    def skipped(self) -> list[str]:
        return self.ids(Outcome.SKIPPED, Outcome.RECOVERED)

    @property
    def failed(self) -> list[str]:
        return self.ids(Outcome.FAILED)

    def summary(self) -> dict[str, Any]:
        """The operator's XCom: plain JSON types only."""
        stages: dict[str, dict[str, Any]] = {}
        for o in self.outcomes:
            stage = stages.setdefault(o.stage, {k.value.lower(): [] for k in Outcome})
            stage[o.outcome.value.lower()].append(o.change_id)
        for stage in stages.values():
            stage["status"] = _stage_status(stage)
        return {
            "execution_id": self.execution_id,
            "applied": self.applied,
            "skipped": self.skipped,
            "failed": self.failed,
            "recovered": self.ids(Outcome.RECOVERED),
            "pending": self.ids(Outcome.PENDING),
            "blocked": self.ids(Outcome.BLOCKED),
            "issues": list(self.issues),
            "dry_run": self.dry_run,
            "lock_taken": self.lock_taken,
            "stages": stages,
        }


def _stage_status(stage: dict[str, Any]) -> str:
    if stage["failed"]:
        return "FAILED"
    if stage["blocked"]:
        return "BLOCKED"
    if stage["pending"]:
        return "PLANNED"
    if stage["not_run"]:
        return "NOT_RUN"
    return "COMPLETED"
