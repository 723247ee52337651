"""The stage plan: for each change of the pipeline, its action from the audit snapshot (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flamingock_provider.engine.discovery import ChangeDefinition, LoadedStage, Pipeline
from flamingock_provider.engine.model import Action, AuditEntry, Issue, decide_action


@dataclass(frozen=True, slots=True)
class PlannedChange:
    change: ChangeDefinition
    action: Action
    latest: AuditEntry | None


@dataclass(frozen=True, slots=True)
class StagePlan:
    stage: LoadedStage
    changes: tuple[PlannedChange, ...]

    @property
    def issues(self) -> list[Issue]:
        return [
            Issue(p.change.id, self.stage.name, p.latest)
            for p in self.changes
            if p.action is Action.MANUAL_INTERVENTION and p.latest is not None
        ]

    @property
    def pending(self) -> bool:
        return any(p.action in (Action.APPLY, Action.CHECK_MARKER) for p in self.changes)


def plan(pipeline: Pipeline, latest: Mapping[str, AuditEntry]) -> list[StagePlan]:
    """Decide every change's action; entries of changes no longer declared are ignored."""
    return [
        StagePlan(
            stage,
            tuple(
                PlannedChange(c, decide_action(latest.get(c.id)), latest.get(c.id))
                for c in stage.changes
            ),
        )
        for stage in pipeline.stages
    ]


def all_done(stages: Sequence[StagePlan]) -> bool:
    """Whether every change is already applied (nothing pending, no issue)."""
    return all(p.action is Action.SKIP for stage in stages for p in stage.changes)


def needs_lock(stages: Sequence[StagePlan]) -> bool:
    """Whether the run has something to write before the first blocked stage."""
    for stage in stages:
        if stage.issues:
            return False
        if stage.pending:
            return True
    return False
