"""ChangeExecutor: run one change with the write sequence of its strategy (ARCHITECTURE.md §3).

Errors raised by change code are outcomes (recorded; the caller stops the stage); errors raised
by the audit store propagate as `AuditStoreError`, because then the history itself cannot be
trusted to be written.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import replace

from flamingock_provider.engine.discovery import ChangeDefinition
from flamingock_provider.engine.errors import AuditStoreError, ValidationError
from flamingock_provider.engine.lock import Clock
from flamingock_provider.engine.model import Action, AuditEntry, AuditState, TxStrategy
from flamingock_provider.engine.planner import PlannedChange
from flamingock_provider.engine.result import ChangeOutcome, Outcome
from flamingock_provider.engine.store import AuditStore
from flamingock_provider.engine.target import TargetSession

MAX_TRACE = 8000


class ChangeExecutor:
    """Execute planned changes against their target sessions, writing every audit entry.

    :param store: the audit store.
    :param clock: timestamps of the entries.
    :param extra: names offered to every change besides the target's (``context``, ``log``).
    :param log: one line per change.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        clock: Clock,
        extra: Mapping[str, object],
        log: logging.Logger,
    ) -> None:
        self.store = store
        self.clock = clock
        self.extra = extra
        self.log = log
        self.hostname = socket.gethostname()

    def run(self, p: PlannedChange, session: TargetSession, execution_id: str) -> ChangeOutcome:
        """Run (or, through its marker, recover) one pending change; never raises for its
        own errors, which come back as a FAILED outcome."""
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
                    # Never before the STARTED it resolves (its host's clock may run ahead).
                    created_at=max(self.clock(), p.latest.created_at),
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


def _trace(err: BaseException) -> str:
    text = "".join(traceback.format_exception(err))
    return text[-MAX_TRACE:]


def _summary(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:500]
