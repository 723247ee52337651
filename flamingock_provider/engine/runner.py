"""PipelineRunner: plan without the lock, lock only when there is work, re-plan, execute.

Stage by stage: skip what is applied, stop at a blocked stage or at the first failure. How one
change is run and recorded (the four write sequences) is `execution.ChangeExecutor`'s job.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta

from flamingock_provider.engine.discovery import Pipeline
from flamingock_provider.engine.errors import (
    ChangeFailedError,
    FlamingockError,
    ManualInterventionRequired,
    TargetSystemError,
)
from flamingock_provider.engine.execution import ChangeExecutor
from flamingock_provider.engine.lock import (
    DEFAULT_KEY,
    DEFAULT_LEASE,
    DEFAULT_RETRY,
    DEFAULT_WAIT,
    Clock,
    Lease,
    utc_now,
)
from flamingock_provider.engine.model import Action, AuditEntry
from flamingock_provider.engine.planner import (
    PlannedChange,
    StagePlan,
    all_done,
    needs_lock,
    plan,
)
from flamingock_provider.engine.result import ChangeOutcome, Outcome, RunResult
from flamingock_provider.engine.store import AuditStore
from flamingock_provider.engine.target import TargetSession, TargetSystem


class PipelineRunner:
    """Run a validated pipeline against an audit store and target systems.

    :param store: the audit store.
    :param pipeline: stages from `discovery.load_pipeline`.
    :param targets: the target systems the changes name.
    :param extra_injectables: names offered to every change besides the target's (``context``,
        ``log``).
    """

    def __init__(
        self,
        store: AuditStore,
        pipeline: Pipeline,
        targets: Sequence[TargetSystem],
        *,
        lock_key: str = DEFAULT_KEY,
        lock_lease: timedelta = DEFAULT_LEASE,
        lock_wait: timedelta = DEFAULT_WAIT,
        lock_retry: timedelta = DEFAULT_RETRY,
        clock: Clock = utc_now,
        owner: str | None = None,
        extra_injectables: Mapping[str, object] | None = None,
        logger: logging.Logger | None = None,
        heartbeat: bool = True,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.targets = {t.id: t for t in targets}
        self.lock_key = lock_key
        self.lock_lease = lock_lease
        self.lock_wait = lock_wait
        self.lock_retry = lock_retry
        self.clock = clock
        self.owner = owner
        self.log = logger or logging.getLogger("flamingock")
        self.extra: dict[str, object] = {"context": {}, "log": self.log}
        self.extra.update(extra_injectables or {})
        self.heartbeat = heartbeat
        self._latest: Mapping[str, AuditEntry] = {}
        self.executor = ChangeExecutor(store, clock=clock, extra=self.extra, log=self.log)

    # -- entry points ---------------------------------------------------------------------

    def run(self, dry_run: bool = False) -> RunResult:
        """Apply every pending change, stage by stage.

        :raises ValidationError, AuditStoreError, LockError: before or around execution.
        :raises ChangeFailedError: a change raised; its stage and the pipeline stopped.
        :raises ManualInterventionRequired: a stage holds issues; nothing of it ran.
        """
        execution_id = str(uuid.uuid4())
        self.log.info(
            "Flamingock %s %s: %d stage(s), %d change(s)",
            "dry run" if dry_run else "run",
            execution_id,
            len(self.pipeline.stages),
            len(self.pipeline.change_ids()),
        )
        if dry_run:
            return self._dry_run(execution_id)
        self.store.initialize()
        stages = plan(self.pipeline, self.store.read_latest())
        if not needs_lock(stages) and (all_done(stages) or not self._lock_held()):
            # Nothing to write; or a stage is blocked and no run is in progress that could
            # still be turning its STARTED entries into APPLIED: the issues are real.
            return self._execute_plan(execution_id, stages, lease=None)
        lease = Lease(
            self.store,
            key=self.lock_key,
            owner=self.owner,
            lease=self.lock_lease,
            wait=self.lock_wait,
            retry=self.lock_retry,
            clock=self.clock,
            heartbeat=self.heartbeat,
        )
        if not lease.acquire(give_up=self._work_done):
            # Another runner held the lock and, while we waited, did all our work.
            return self._execute_plan(execution_id, plan(self.pipeline, self._latest), None)
        try:
            stages = plan(self.pipeline, self.store.read_latest())
            return self._execute_plan(execution_id, stages, lease)
        finally:
            lease.release()

    def _work_done(self) -> bool:
        """While waiting for the lock: re-read, so waiters find finished work without it.

        Only "everything applied" ends the wait. An apparent issue does not: it may be the
        holder's change in progress (STARTED, not yet APPLIED); it is judged under the lock.
        """
        self._latest = self.store.read_latest()
        return all_done(plan(self.pipeline, self._latest))

    def _lock_held(self) -> bool:
        holder = self.store.lock_holder(self.lock_key)
        return holder is not None and holder.expires_at > self.clock()

    def _dry_run(self, execution_id: str) -> RunResult:
        latest = self.store.read_latest() if self.store.is_initialized() else {}
        outcomes: list[ChangeOutcome] = []
        issues: list[str] = []
        blocked = False
        for stage in plan(self.pipeline, latest):
            stage_issues = stage.issues
            issues.extend(i.describe() for i in stage_issues)
            for p in stage.changes:
                outcome = _planned_outcome(p.action, stopped=blocked or bool(stage_issues))
                outcomes.append(ChangeOutcome(p.change.id, stage.stage.name, outcome))
                self.log.info("change %s: %s (dry run)", p.change.id, outcome.value)
            blocked = blocked or bool(stage_issues)
        return RunResult(execution_id, tuple(outcomes), dry_run=True, issues=tuple(issues))

    # -- execution ------------------------------------------------------------------------

    def _execute_plan(
        self, execution_id: str, stages: list[StagePlan], lease: Lease | None
    ) -> RunResult:
        run = _RunState(execution_id, lock_taken=lease is not None)
        sessions: dict[str, TargetSession] = {}
        try:
            # Open (and prepare) every target a pending change needs before the first audit
            # write, so a missing marker table fails the run before anything is recorded.
            for target_id in _pending_targets(stages):
                self._session(target_id, sessions)
            for index, stage in enumerate(stages):
                issues = stage.issues
                if issues:
                    for p in stage.changes:
                        run.add(p, _planned_outcome(p.action, stopped=True))
                    run.not_run(stages[index + 1 :])
                    result = run.result(tuple(i.describe() for i in issues))
                    raise ManualInterventionRequired(stage.stage.name, issues, result=result)
                for position, p in enumerate(stage.changes):
                    if p.action is Action.SKIP:
                        run.add(p, Outcome.SKIPPED)
                        self.log.info("change %s: SKIP (already applied)", p.change.id)
                        continue
                    assert lease is not None  # needs_lock saw this pending change
                    try:
                        lease.ensure()
                        session = self._session(p.change.target_system, sessions)
                        outcome = self.executor.run(p, session, execution_id)
                    except BaseException:
                        run.not_run([stage], start=position)
                        run.not_run(stages[index + 1 :])
                        raise
                    run.outcomes.append(outcome)
                    if outcome.outcome is Outcome.FAILED:
                        run.not_run([stage], start=position + 1)
                        run.not_run(stages[index + 1 :])
                        raise ChangeFailedError(
                            f"Change '{p.change.id}' (stage '{stage.stage.name}') failed: "
                            f"{outcome.error}. Stage '{stage.stage.name}' stopped; later "
                            "stages did not run.",
                            change_id=p.change.id,
                            stage=stage.stage.name,
                            result=run.result(),
                        )
            return run.result()
        finally:
            for session in sessions.values():
                try:
                    session.close()
                except Exception as err:  # closing must not hide the run's own outcome
                    self.log.warning("Closing a target session failed: %s", err)

    def _session(self, target_id: str, sessions: dict[str, TargetSession]) -> TargetSession:
        session = sessions.get(target_id)
        if session is None:
            try:
                session = self.targets[target_id].open(self.store)
                sessions[target_id] = session
                session.prepare()
            except FlamingockError:
                raise
            except Exception as err:
                raise TargetSystemError(
                    f"Target system '{target_id}' could not be opened: "
                    f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}",
                    target=target_id,
                ) from err
        return session


class _RunState:
    """Outcomes gathered while running, turned into a `RunResult` at any stop."""

    def __init__(self, execution_id: str, lock_taken: bool) -> None:
        self.execution_id = execution_id
        self.lock_taken = lock_taken
        self.outcomes: list[ChangeOutcome] = []

    def add(self, p: PlannedChange, outcome: Outcome) -> None:
        self.outcomes.append(ChangeOutcome(p.change.id, p.change.stage, outcome))

    def not_run(self, stages: Sequence[StagePlan], start: int = 0) -> None:
        for stage in stages:
            for p in stage.changes[start:]:
                self.add(p, Outcome.NOT_RUN)
            start = 0

    def result(self, issues: tuple[str, ...] = ()) -> RunResult:
        return RunResult(
            self.execution_id, tuple(self.outcomes), lock_taken=self.lock_taken, issues=issues
        )


def _planned_outcome(action: Action, *, stopped: bool) -> Outcome:
    """A change's outcome in a plan that is not executed (dry run, or a blocked stage)."""
    if action is Action.SKIP:
        return Outcome.SKIPPED
    if action is Action.MANUAL_INTERVENTION:
        return Outcome.BLOCKED
    return Outcome.NOT_RUN if stopped else Outcome.PENDING


def _pending_targets(stages: Sequence[StagePlan]) -> list[str]:
    """Target ids of the changes the run may execute (up to the first blocked stage)."""
    targets: list[str] = []
    for stage in stages:
        if stage.issues:
            break
        for p in stage.changes:
            if p.action is not Action.SKIP and p.change.target_system not in targets:
                targets.append(p.change.target_system)
    return targets
