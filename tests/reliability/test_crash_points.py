"""Crash points: SIGKILL a runner at every point of every write sequence (ARCHITECTURE.md §3).

A worker process (`runner_worker.py`) runs ``change-01``, ``change-02``, ``change-03`` and dies
inside ``change-02``'s sequence: (a) right after its ``STARTED`` entry is written, (b) inside
``apply``, (c) after ``apply`` returned (after the commit, when it has its own transaction) but
before ``APPLIED`` is written, (d) inside ``rollback`` (a non-transactional change that failed).
Each change records every application of itself in the target, so a second application shows.

Then a new runner, started at once, must wait until the dead runner's lease has run out (never
sooner), and find, per strategy:

- ``NON_TX``: an issue, the change left ``STARTED`` (``FAILED`` when it died in ``rollback``);
- ``TX_SHARED`` (target = the audit database): never an issue; the change is applied once;
- ``TX_SEPARATE_WITH_MARKER`` (target = another database): never an issue; (a)/(b) the change is
  applied by the next run; (c) its marker shows it committed, so it is recorded ``APPLIED``
  without running again;
- ``TX_SEPARATE_NO_MARKER`` (markers off): an issue.

(d) exists only for ``NON_TX``: only a failed non-transactional change is rolled back by code.
On SQLite, PostgreSQL and MariaDB; the changes write rows only (DML), since MariaDB commits DDL
implicitly, which would turn a transactional change into a partly committed one.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

import pytest
from reliability_kit import first_acquisition, record_lock_attempts
from runner_kit import ChangeSource, run_pipeline
from runner_scenarios import WORKER_TIMEOUT, SqlScenario

from flamingock_provider.changes import Stage
from flamingock_provider.engine.errors import ManualInterventionRequired
from flamingock_provider.engine.lock import DEFAULT_KEY
from flamingock_provider.engine.model import issues_in
from flamingock_provider.engine.result import Outcome

LEASE = 1.0
"""The dying runner's lease, in seconds: what the next runner must wait out."""

AFTER_STARTED, INSIDE_APPLY, BEFORE_APPLIED, INSIDE_ROLLBACK = (
    "after-STARTED",
    "inside-apply",
    "before-APPLIED",
    "inside-rollback",
)


@dataclass(frozen=True)
class Crash:
    """One row of the table: where the runner dies, and what the next run must find."""

    strategy: str
    point: str
    rows_after_crash: int
    """Applications of ``change-02`` committed in the target when the runner died."""
    next_run: str
    """``APPLIED`` / ``RECOVERED`` (the next run's outcome for change-02), or ``issue:<STATE>``."""
    history: tuple[str, ...]
    """The states of ``change-02`` in the audit history after the next run, in order."""

    @property
    def id(self) -> str:
        return f"{self.strategy}-{self.point}"


S, A, F = "STARTED", "APPLIED", "FAILED"
CRASHES = [
    Crash("NON_TX", AFTER_STARTED, 0, "issue:STARTED", (S,)),
    Crash("NON_TX", INSIDE_APPLY, 1, "issue:STARTED", (S,)),
    Crash("NON_TX", BEFORE_APPLIED, 1, "issue:STARTED", (S,)),
    Crash("NON_TX", INSIDE_ROLLBACK, 1, "issue:FAILED", (S, F)),
    Crash("TX_SHARED", AFTER_STARTED, 0, "APPLIED", (S, A)),
    Crash("TX_SHARED", INSIDE_APPLY, 0, "APPLIED", (S, A)),
    Crash("TX_SHARED", BEFORE_APPLIED, 0, "APPLIED", (S, A)),
    Crash("TX_SEPARATE_WITH_MARKER", AFTER_STARTED, 0, "APPLIED", (S, S, A)),
    Crash("TX_SEPARATE_WITH_MARKER", INSIDE_APPLY, 0, "APPLIED", (S, S, A)),
    Crash("TX_SEPARATE_WITH_MARKER", BEFORE_APPLIED, 1, "RECOVERED", (S, A)),
    Crash("TX_SEPARATE_NO_MARKER", AFTER_STARTED, 0, "issue:STARTED", (S,)),
    Crash("TX_SEPARATE_NO_MARKER", INSIDE_APPLY, 0, "issue:STARTED", (S,)),
    Crash("TX_SEPARATE_NO_MARKER", BEFORE_APPLIED, 1, "issue:STARTED", (S,)),
]


def _target(world: SqlScenario, strategy: str) -> Any:
    if strategy in ("NON_TX", "TX_SHARED"):
        return world.target(world.audit_url)
    return world.separate_target(markers=strategy == "TX_SEPARATE_WITH_MARKER")


def _kill(world: SqlScenario, stage: Stage, target: Any, point: str) -> None:
    """Run a worker on ``stage`` and have it die at ``point`` of ``change-02``."""
    if point in (INSIDE_APPLY, INSIDE_ROLLBACK):
        where = "change-02" if point == INSIDE_APPLY else "rollback:change-02"
        world.run_until_hang(stage, target, where, lease=LEASE)
        return
    when = "after STARTED" if point == AFTER_STARTED else "before APPLIED"
    dead = world.worker(stage, target, lease=LEASE, die={"when": when, "change": "change-02"})
    out, err = dead.communicate(timeout=WORKER_TIMEOUT)
    assert -signal.SIGKILL == dead.returncode, (out, err)


@pytest.mark.parametrize("crash", CRASHES, ids=[c.id for c in CRASHES])
def test_a_killed_runner_is_recovered_per_its_strategy_after_its_lease(
    sql_world: SqlScenario, crash: Crash
) -> None:
    """After a SIGKILL at each point, the next run waits out the lease, then finds what the
    strategy promises: an issue in the right state, or the change applied exactly once.
    """
    world = sql_world
    transactional = crash.strategy != "NON_TX"
    stage = world.stage(
        ChangeSource("change-01", transactional=transactional),
        ChangeSource(
            "change-02", transactional=transactional, rollback=crash.point == INSIDE_ROLLBACK
        ),
        ChangeSource("change-03", transactional=transactional),
    )
    target = _target(world, crash.strategy)
    if crash.point == INSIDE_ROLLBACK:
        world.fail("change-02")

    _kill(world, stage, target, crash.point)
    dead = world.store().lock_holder(DEFAULT_KEY)
    rows_after_crash = world.counts(target).get("change-02", 0)
    store = world.store()
    attempts = record_lock_attempts(store)
    try:
        result = run_pipeline(store, [stage], [target])
        blocked: ManualInterventionRequired | None = None
    except ManualInterventionRequired as err:
        result, blocked = err.result, err
    refused, acquired_at = first_acquisition(attempts)

    assert dead is not None, "the killed runner's lock record should outlive it"
    assert acquired_at is not None and acquired_at >= dead.expires_at, (acquired_at, dead)
    assert refused >= 1, "the next runner should have arrived while the dead lease still ran"
    assert crash.rows_after_crash == rows_after_crash
    history = world.history("change-02")
    assert (crash.history, {crash.strategy}, crash.history.count(S)) == (
        tuple(e.state.value for e in history),
        {e.tx_strategy.value for e in history},
        len({e.execution_id for e in history}),  # one STARTED per execution, no stray ids
    )
    assert None is world.store().lock_holder(DEFAULT_KEY)
    if crash.next_run.startswith("issue:"):
        assert blocked is not None, f"expected an issue, the run gave {result}"
        assert [("change-02", crash.next_run.removeprefix("issue:"))] == [
            (i.change_id, i.state.value) for i in blocked.issues
        ]
        counts = world.counts(target)
        assert (1, crash.rows_after_crash, 0) == tuple(
            counts.get(c, 0) for c in ("change-01", "change-02", "change-03")
        )
        return
    assert blocked is None, str(blocked)
    assert result is not None
    assert [
        ("change-01", Outcome.SKIPPED),
        ("change-02", Outcome(crash.next_run)),
        ("change-03", Outcome.APPLIED),
    ] == [(o.change_id, o.outcome) for o in result.outcomes]
    assert {"change-01": 1, "change-02": 1, "change-03": 1} == world.counts(target)
    assert [] == issues_in(world.store().read_latest())
    if crash.strategy == "TX_SEPARATE_WITH_MARKER":
        assert 0 == world.markers(target.url)
