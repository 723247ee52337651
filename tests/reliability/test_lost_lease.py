"""Lost lease: a runner whose lease could not be extended stops before its next change.

Two runners (each with its own store, connections and lock owner, in threads of this process)
work on one pipeline of short non-transactional changes. Runner A loses its lease; runner B
takes the lock record over once it has expired and runs the rest. Every change records its
runner and the moment it started and ended, so the test proves no change ever ran while another
did (overlapping-execution detection) and none ran twice.

The changes are non-transactional on purpose: a transactional change on SQLite holds the
database's write lock from its first statement, which would serialise the two runners by itself
and hide a lock that failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from reliability_kit import first_acquisition, record_lock_attempts
from runner_kit import ChangeSource, run_pipeline
from runner_scenarios import SqlScenario, overlaps

from flamingock_provider.engine.errors import AuditStoreError, LockError
from flamingock_provider.engine.lock import DEFAULT_KEY, new_owner
from flamingock_provider.engine.model import AuditEntry, AuditState
from flamingock_provider.engine.result import RunResult

STEP = 0.02
"""Seconds each change takes: well inside the lease's safety margin (a tenth of it)."""
WAIT = 30.0


def _ids(n: int) -> list[str]:
    return [f"change-{i:02d}" for i in range(1, n + 1)]


def _until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _holder(world: SqlScenario) -> Any:
    store = world.store()
    store.initialize()
    return store.lock_holder(DEFAULT_KEY)


def _check_one_runner_at_a_time(
    world: SqlScenario, target: Any, ids: list[str], a: str, b: str, b_result: RunResult
) -> None:
    """Every change once and never two at a time: A's first, then B's (who did the rest)."""
    executions = world.executions(target)
    runners = [e.runner for e in executions]
    split = runners.count(a)
    assert dict.fromkeys(ids, 1) == world.counts(target)
    assert [] == overlaps(executions)
    assert ids == [e.change_id for e in executions]
    assert [a] * split + [b] * (len(ids) - split) == runners
    assert (True, ids[split:]) == (0 < split < len(ids), b_result.applied)


def test_a_runner_without_heartbeat_stops_when_its_lease_runs_out(sql_world: SqlScenario) -> None:
    """Heartbeat off, lease 1 s: A stops with LockError before the change its lease no longer
    covers (it releases the lock as it stops); B, waiting all along, then runs the rest.
    """
    world = sql_world
    ids = _ids(60)
    stage = world.stage(*(ChangeSource(i, transactional=False, sleep=STEP) for i in ids))
    target = world.target(world.audit_url)
    a, b = new_owner("runner-a"), new_owner("runner-b")
    store_b = world.store()
    attempts_b = record_lock_attempts(store_b)

    with ThreadPoolExecutor(2) as pool:
        run_a = pool.submit(
            run_pipeline, world.store(), [stage], [target], lease=1.0, heartbeat=False, owner=a
        )
        _until(lambda: getattr(_holder(world), "owner", None) == a, "runner A to hold the lock")
        run_b = pool.submit(run_pipeline, store_b, [stage], [target], wait=WAIT, owner=b)
        b_result = run_b.result(timeout=WAIT)
        a_error = run_a.exception(timeout=WAIT)

    refused, _ = first_acquisition(attempts_b)
    assert isinstance(a_error, LockError), a_error
    assert "ran out" in str(a_error) and "stopping before the next change" in str(a_error)
    assert refused >= 1, "B should have waited for A"
    _check_one_runner_at_a_time(world, target, ids, a, b, b_result)


def test_a_runner_whose_lock_was_taken_over_stops_naming_the_new_owner(
    sql_world: SqlScenario,
) -> None:
    """A's lock writes fail (a partition) while A pauses between two changes; its lease runs
    out and B takes the record over. Once the store answers again, A's heartbeat finds the
    record is B's, and A stops with a LockError naming B instead of starting its next change.
    (B pauses after its first change until then, so it still holds the record.)
    """
    world = sql_world
    ids = _ids(20)
    stage = world.stage(*(ChangeSource(i, transactional=False, sleep=STEP) for i in ids))
    target = world.target(world.audit_url)
    a, b = new_owner("runner-a"), new_owner("runner-b")
    partition, resume = threading.Event(), threading.Event()
    paused, b_paused = threading.Event(), threading.Event()
    store_a = world.store()
    extends = _partitioned_extends(store_a, partition)
    _pause_after(store_a, "change-10", paused, resume)
    store_b = world.store()
    attempts_b = record_lock_attempts(store_b)
    _pause_after(store_b, "change-11", b_paused, resume)

    with ThreadPoolExecutor(2) as pool:
        run_a: Future[RunResult] = pool.submit(
            run_pipeline, store_a, [stage], [target], lease=1.5, owner=a
        )
        assert paused.wait(WAIT), "runner A never reached the pause"
        partition.set()
        run_b = pool.submit(run_pipeline, store_b, [stage], [target], wait=WAIT, owner=b)
        assert b_paused.wait(WAIT), "runner B never took over"
        partition.clear()
        _until(lambda: False in [ok for _, ok in extends], "A's heartbeat to see the takeover")
        resume.set()
        a_error = run_a.exception(timeout=WAIT)
        b_result = run_b.result(timeout=WAIT)

    a_valid_until = max(until for until, ok in extends if ok is True)
    refused, acquired_at = first_acquisition(attempts_b)
    assert isinstance(a_error, LockError), a_error
    assert f"now belongs to {b}" in str(a_error)
    assert refused >= 1 and acquired_at is not None and acquired_at >= a_valid_until
    _check_one_runner_at_a_time(world, target, ids, a, b, b_result)


def _partitioned_extends(store: Any, partition: threading.Event) -> list[tuple[datetime, Any]]:
    """Make ``store``'s lock extensions fail while ``partition`` is set; record each one as
    ``(requested expiry, True | False | "error")``. The lease starts as one successful entry.
    """
    extend = store.lock_extend
    acquire = store.lock_acquire
    calls: list[tuple[datetime, Any]] = []

    def acquiring(key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        acquired = bool(acquire(key, owner, now, expires_at))
        if acquired:
            calls.append((expires_at, True))
        return acquired

    def extending(key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        if partition.is_set():
            calls.append((expires_at, "error"))
            raise AuditStoreError("simulated partition: the lock table cannot be reached")
        extended = bool(extend(key, owner, now, expires_at))
        calls.append((expires_at, extended))
        return extended

    store.lock_acquire = acquiring
    store.lock_extend = extending
    return calls


def _pause_after(
    store: Any, change_id: str, paused: threading.Event, resume: threading.Event
) -> None:
    """Pause the runner right after it recorded ``change_id`` APPLIED: between two changes."""
    append = store.append

    def appending(entry: AuditEntry, transaction: object | None = None) -> None:
        append(entry, transaction)
        if entry.change_id == change_id and entry.state is AuditState.APPLIED:
            paused.set()
            resume.wait(WAIT)

    store.append = appending
