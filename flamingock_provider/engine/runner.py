"""PipelineRunner: plan without the lock, lock only when there is work, re-plan, execute.

The four write sequences of ARCHITECTURE.md §3 live in `_execute`. Errors raised by change
code are outcomes (recorded, then `ChangeFailedError`); errors raised by the audit store
propagate as `AuditStoreError`, because then the history itself cannot be trusted to be written.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta

from flamingock_provider.engine.discovery import ChangeDefinition, Pipeline
from flamingock_provider.engine.errors import (
    AuditStoreError,
    ChangeFailedError,
    ManualInterventionRequired,
    ValidationError,
)
from flamingock_provider.engine.lock import (
    DEFAULT_KEY,
    DEFAULT_LEASE,
    DEFAULT_RETRY,
    DEFAULT_WAIT,
    Clock,
    Lease,
    utc_now,
)
from flamingock_provider.engine.model import Action, AuditEntry, AuditState, TxStrategy
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

MAX_TRACE = 8000


class _Stop(Exception):
    """Internal: ends the run early with a prepared error."""


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
        self.hostname = socket.gethostname()
        self._latest: Mapping[str, AuditEntry] = {}

    # -- entry points ---------------------------------------------------------------------

    def run(self, dry_run: bool = False) -> RunResult:
        """Apply every pending change, stage by stage.

        :raises ValidationError, AuditStoreError, LockError: before or around execution.
        :raises ChangeFailedError: a change raised; its stage and the pipeline stopped.
        :raises ManualInterventionRequired: a stage holds issues; nothing of it ran.
        """
        execution_id = str(uuid.uuid4())
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
                        outcome = self._run_change(p, session, execution_id)
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
            session = self.targets[target_id].open(self.store)
            sessions[target_id] = session
            session.prepare()
        return session

    def _run_change(
        self, p: PlannedChange, session: TargetSession, execution_id: str
    ) -> ChangeOutcome:
        change = p.change
        if (
            p.action is Action.CHECK_MARKER
            and p.latest is not None
            and session.has_marker(change.id, p.latest.execution_id)
        ):
            self._append(
                replace(
                    p.latest,
                    state=AuditState.APPLIED,
                    created_at=self.clock(),
                    error_trace=None,
                )
            )
            self._clear_marker(session, change.id, p.latest.execution_id)
            self.log.info(
                "change %s: RECOVERED (its marker shows execution %s committed)",
                change.id,
                p.latest.execution_id,
            )
            return ChangeOutcome(
                change.id,
                change.stage,
                Outcome.RECOVERED,
                tx_strategy=p.latest.tx_strategy.value,
            )
        started = time.monotonic()
        strategy = session.strategy(change.transactional)
        error = self._execute(change, session, strategy, execution_id)
        millis = int((time.monotonic() - started) * 1000)
        outcome = Outcome.APPLIED if error is None else Outcome.FAILED
        self.log.info(
            "change %s: %s in %d ms (%s)", change.id, outcome.value, millis, strategy.value
        )
        return ChangeOutcome(change.id, change.stage, outcome, millis, strategy.value, error)

    def _execute(
        self,
        change: ChangeDefinition,
        session: TargetSession,
        strategy: TxStrategy,
        execution_id: str,
    ) -> str | None:
        """Run one change with the write sequence of its strategy; return its error or None."""
        entry = self._entry_factory(change, strategy, execution_id)
        started_at = self.clock()
        clock_start = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - clock_start) * 1000)

        if strategy is TxStrategy.NON_TX:
            self._append(entry(AuditState.STARTED))
            try:
                with session.resources() as resources:
                    self._call(change, "apply", resources)
            except Exception as err:
                trace = _trace(err)
                self._append(entry(AuditState.FAILED, elapsed(), trace))
                self._rollback(change, session, entry)
                return _summary(err)
            self._append(entry(AuditState.APPLIED, elapsed()))
            return None

        if strategy is TxStrategy.TX_SHARED:
            try:
                with session.transaction() as tx:
                    self._append(entry(AuditState.STARTED), tx.audit_handle)
                    self._call(change, "apply", tx.injectables)
                    self._append(entry(AuditState.APPLIED, elapsed()), tx.audit_handle)
            except AuditStoreError:
                raise
            except Exception as err:
                failed = entry(AuditState.FAILED, elapsed(), _trace(err))
                started = replace(entry(AuditState.STARTED), created_at=started_at)
                return self._after_shared_failure(change, failed, started, execution_id, err)
            return None

        # TX_SEPARATE_WITH_MARKER / TX_SEPARATE_NO_MARKER
        marker = strategy is TxStrategy.TX_SEPARATE_WITH_MARKER
        self._append(entry(AuditState.STARTED))
        phase = "apply"
        try:
            with session.transaction() as tx:
                self._call(change, "apply", tx.injectables)
                if marker:
                    tx.write_marker(change.id, execution_id)
                phase = "commit"
        except Exception as err:
            if phase == "apply":
                self._append(entry(AuditState.FAILED, elapsed(), _trace(err)))
                return _summary(err)
            return self._after_commit_error(
                change, session, entry, execution_id, err, marker, elapsed()
            )
        self._append(entry(AuditState.APPLIED, elapsed()))
        if marker:
            self._clear_marker(session, change.id, execution_id)
        return None

    def _after_commit_error(
        self,
        change: ChangeDefinition,
        session: TargetSession,
        entry: Callable[..., AuditEntry],
        execution_id: str,
        err: Exception,
        marker: bool,
        millis: int,
    ) -> str | None:
        """A commit that raised may or may not have committed: only a marker can tell."""
        if marker:
            try:
                committed = session.has_marker(change.id, execution_id)
            except Exception as check_err:
                self.log.warning("Marker check for %s failed: %s", change.id, check_err)
            else:
                if committed:
                    self._append(entry(AuditState.APPLIED, millis))
                    self._clear_marker(session, change.id, execution_id)
                    return None
                self._append(entry(AuditState.FAILED, millis, _trace(err)))
                return _summary(err)
        # Leave STARTED: the outcome is unknown, so the next run decides (marker) or a person.
        return f"commit outcome unknown, left STARTED: {_summary(err)}"

    def _after_shared_failure(
        self,
        change: ChangeDefinition,
        failed: AuditEntry,
        started: AuditEntry,
        execution_id: str,
        err: Exception,
    ) -> str | None:
        """Record a failed `TX_SHARED` change, after checking what its transaction left.

        Normally nothing: the audit records were rolled back with the change, so the history
        gets STARTED + FAILED outside the transaction and the next run applies it again.
        FAILED is written first and STARTED carries the earlier start time: a crash between
        the two writes leaves FAILED as the latest entry (apply again), never a lone STARTED.
        Two exceptions: the commit went through before the error reached us (APPLIED is
        there: success), or the database committed part of the transaction by itself
        (MySQL/MariaDB commit DDL implicitly, so STARTED survived): partial effects may remain,
        so FAILED is recorded as non-transactional, which needs a person unless ALWAYS_RETRY.
        """
        latest = self.store.read_latest().get(change.id)
        if latest is not None and latest.execution_id == execution_id:
            if latest.state is AuditState.APPLIED:
                return None
            self._append(replace(failed, tx_strategy=TxStrategy.NON_TX, transaction_flag=False))
            return (
                f"{_summary(err)} (the database committed part of the transaction implicitly, "
                "e.g. DDL on MySQL/MariaDB: check the target)"
            )
        self._append(failed)
        self._append(started)
        return _summary(err)

    def _rollback(
        self, change: ChangeDefinition, session: TargetSession, entry: Callable[..., AuditEntry]
    ) -> None:
        if not change.has_rollback:
            return
        try:
            with session.resources() as resources:
                self._call(change, "rollback", resources)
        except Exception as err:
            self.log.error("change %s: rollback failed: %s", change.id, _summary(err))
            self._append(entry(AuditState.ROLLBACK_FAILED, 0, _trace(err)))
        else:
            self.log.info("change %s: rolled back", change.id)
            self._append(entry(AuditState.ROLLED_BACK))

    def _call(self, change: ChangeDefinition, method: str, offered: Mapping[str, object]) -> None:
        names = change.apply_params if method == "apply" else change.rollback_params or ()
        available = {**self.extra, **offered}
        missing = [n for n in names if n not in available]
        if missing:
            raise ValidationError(
                f"change '{change.id}': target system '{change.target_system}' offered no "
                f"{', '.join(missing)} for '{method}'"
            )
        instance = change.cls()
        getattr(instance, method)(**{n: available[n] for n in names})

    def _append(self, entry: AuditEntry, transaction: object | None = None) -> None:
        self.store.append(entry, transaction)

    def _clear_marker(self, session: TargetSession, change_id: str, execution_id: str) -> None:
        try:
            session.clear_marker(change_id, execution_id)
        except Exception as err:  # a leftover marker is harmless: it names an old execution
            self.log.warning("Could not remove marker of %s: %s", change_id, err)

    def _entry_factory(
        self, change: ChangeDefinition, strategy: TxStrategy, execution_id: str
    ) -> Callable[..., AuditEntry]:
        def entry(state: AuditState, millis: int = 0, trace: str | None = None) -> AuditEntry:
            return AuditEntry(
                execution_id=execution_id,
                change_id=change.id,
                state=state,
                created_at=self.clock(),
                stage_id=change.stage,
                author=change.author,
                invoked_class=change.class_name,
                invoked_method="rollback"
                if state in (AuditState.ROLLED_BACK, AuditState.ROLLBACK_FAILED)
                else "apply",
                source_file=change.source_file,
                metadata={},
                execution_millis=millis,
                execution_hostname=self.hostname,
                error_trace=trace,
                tx_strategy=strategy,
                target_system_id=change.target_system,
                change_order=change.order,
                recovery_strategy=change.recovery,
                transaction_flag=strategy.transactional,
            )

        return entry


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


def _trace(err: BaseException) -> str:
    text = "".join(traceback.format_exception(err))
    return text[-MAX_TRACE:]


def _summary(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:500]
