"""The runner end to end on the SQL stores: every write sequence, and bad input.

Change packages are generated per test (`runner_kit`); each change inserts one row into a counter
table of its target, so "applied exactly once" is a row count. Racing processes and crashes at
every point of every write sequence (real SIGKILLs of `runner_worker.py`) are the reliability
suite's (tests/reliability), on the same kit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from runner_kit import TARGET_ID, ChangeSource, run_pipeline
from runner_scenarios import SqlScenario as Scenario
from store_backends import SqlBackend

from flamingock_provider.changes import Stage
from flamingock_provider.engine.errors import (
    ChangeFailedError,
    ManualInterventionRequired,
    ValidationError,
)
from flamingock_provider.engine.model import AuditEntry, AuditState, TxStrategy
from flamingock_provider.targets.sql import SqlTargetSystem


def _states(entries: Sequence[AuditEntry]) -> list[tuple[str, str]]:
    return [(e.state.value, e.tx_strategy.value) for e in entries]


@pytest.fixture
def world(sql_store_factory: SqlBackend, tmp_path: Path) -> Iterator[Scenario]:
    """A `Scenario` on each SQL audit store; generated packages are forgotten afterwards."""
    scenario = Scenario(sql_store_factory, tmp_path)
    try:
        yield scenario
    finally:
        scenario.close()


def _ids(n: int) -> list[str]:
    return [f"change-{i:02d}" for i in range(1, n + 1)]


# -- write sequences -------------------------------------------------------------------------


def test_applied_changes_are_skipped_on_the_next_run_without_locking(world: Scenario) -> None:
    """A first run applies every change once; the second skips them all and takes no lock."""
    ids = _ids(3)
    stage = world.stage(*(ChangeSource(i) for i in ids))
    target = world.target(world.audit_url)

    first = world.run(stage, target)
    second = world.run(stage, target)

    assert (ids, [], True) == (first.applied, first.skipped, first.lock_taken)
    assert ([], ids, False) == (second.applied, second.skipped, second.lock_taken)
    assert dict.fromkeys(ids, 1) == world.counts(world.audit_url)
    assert [AuditState.STARTED, AuditState.APPLIED] * 3 == [e.state for e in world.history()]


def test_same_database_is_tx_shared_with_started_inside_the_transaction(world: Scenario) -> None:
    """Target = audit database: TX_SHARED, and the change's own connection sees its STARTED."""
    stage = world.stage(ChangeSource("change-01"), probe_audit=True)

    result = world.run(stage, world.target(world.audit_url))

    assert [TxStrategy.TX_SHARED.value] == [o.tx_strategy for o in result.outcomes]
    assert [("STARTED", "TX_SHARED"), ("APPLIED", "TX_SHARED")] == _states(world.history())
    assert [1] == world.seen_started(world.audit_url)


def test_tx_shared_failure_keeps_neither_rows_nor_in_transaction_audit(world: Scenario) -> None:
    """A TX_SHARED change that raises rolls back its rows and its in-transaction STARTED.

    Only the separate STARTED + FAILED pair is recorded (so the in-transaction STARTED of the
    same execution did not survive, or this pair would be a duplicate), and the next run
    applies the change.
    """
    stage = world.stage(ChangeSource("change-01"))
    target = world.target(world.audit_url)
    world.fail("change-01")

    with pytest.raises(ChangeFailedError) as caught:
        world.run(stage, target)
    failed_history = world.history()
    rows_after_failure = world.counts(world.audit_url)
    world.fail("change-01", failing=False)
    retry = world.run(stage, target)

    assert "change-01" == caught.value.change_id
    assert ({}, [("STARTED", "TX_SHARED"), ("FAILED", "TX_SHARED")]) == (
        rows_after_failure,
        _states(failed_history),
    )
    assert 1 == len({e.execution_id for e in failed_history})
    assert "RuntimeError" in (failed_history[-1].error_trace or "")
    assert (["change-01"], {"change-01": 1}) == (retry.applied, world.counts(world.audit_url))


def test_tx_shared_failure_after_ddl_reports_the_change_error(world: Scenario) -> None:
    """A TX_SHARED change that creates a table and then raises fails as itself, recorded FAILED.

    The run must end in `ChangeFailedError` naming the change and carrying its own error, with
    FAILED as the change's latest entry, whatever the dialect does with DDL in a transaction.
    """
    made = world.backend.name("made")
    source = f"""
        from sqlalchemy import text
        from flamingock_provider.changes import change

        @change(id="change-01", target_system="db")
        class CreateThenFail:
            def apply(self, connection):
                connection.execute(text("CREATE TABLE {made} (x INTEGER)"))
                raise RuntimeError("failed after its DDL")
        """
    stage = world.stage(ChangeSource("change-01", source=source))

    with pytest.raises(ChangeFailedError) as caught:
        world.run(stage, world.target(world.audit_url))

    assert ("change-01", True) == (
        caught.value.change_id,
        "failed after its DDL" in str(caught.value),
    )
    assert "FAILED" == world.history("change-01")[-1].state.value


def test_other_database_is_tx_separate_with_marker(world: Scenario) -> None:
    """Target elsewhere: TX_SEPARATE_WITH_MARKER; the marker commits and is then cleared."""
    stage = world.stage(ChangeSource("change-01"))
    target = world.target(world.other_url)

    result = world.run(stage, target)
    again = world.run(stage, target)

    assert ["TX_SEPARATE_WITH_MARKER"] == [o.tx_strategy for o in result.outcomes]
    assert [("STARTED", "TX_SEPARATE_WITH_MARKER"), ("APPLIED", "TX_SEPARATE_WITH_MARKER")] == (
        _states(world.history())
    )
    assert ({"change-01": 1}, 0) == (world.counts(world.other_url), world.markers(world.other_url))
    assert (set(), ["change-01"]) == (
        {world.counter, world.marker_table} & world.tables(world.audit_url),
        again.skipped,
    )


def test_markers_off_is_tx_separate_no_marker(world: Scenario) -> None:
    """``markers=False``: TX_SEPARATE_NO_MARKER, and no marker table is created."""
    stage = world.stage(ChangeSource("change-01"))

    result = world.run(stage, world.target(world.other_url, markers=False))

    assert ["TX_SEPARATE_NO_MARKER"] == [o.tx_strategy for o in result.outcomes]
    assert [("STARTED", "TX_SEPARATE_NO_MARKER"), ("APPLIED", "TX_SEPARATE_NO_MARKER")] == (
        _states(world.history())
    )
    assert ({"change-01": 1}, False) == (
        world.counts(world.other_url),
        world.marker_table in world.tables(world.other_url),
    )


@pytest.mark.parametrize("markers", [True, False], ids=["with-marker", "no-marker"])
def test_tx_separate_failure_rolls_back_and_is_applied_next_run(
    world: Scenario, markers: bool
) -> None:
    """A separate-transaction change that raises leaves no rows, FAILED, and runs again next."""
    stage = world.stage(ChangeSource("change-01"))
    target = world.target(world.other_url, markers=markers)
    strategy = "TX_SEPARATE_WITH_MARKER" if markers else "TX_SEPARATE_NO_MARKER"
    world.fail("change-01")

    with pytest.raises(ChangeFailedError):
        world.run(stage, target)
    rows_after_failure = world.counts(world.other_url)
    world.fail("change-01", failing=False)
    retry = world.run(stage, target)

    assert {} == rows_after_failure
    assert [("STARTED", strategy), ("FAILED", strategy), ("STARTED", strategy)] == (
        _states(world.history())[:3]
    )
    assert (["change-01"], {"change-01": 1}) == (retry.applied, world.counts(world.other_url))


def test_non_transactional_change_is_non_tx_in_autocommit(world: Scenario) -> None:
    """``transactional=False``: NON_TX, each statement commits on its own."""
    stage = world.stage(ChangeSource("change-01", transactional=False))

    result = world.run(stage, world.target(world.audit_url))

    assert ["NON_TX"] == [o.tx_strategy for o in result.outcomes]
    assert [("STARTED", "NON_TX"), ("APPLIED", "NON_TX")] == _states(world.history())
    assert [False, False] == [e.transaction_flag for e in world.history()]
    assert {"change-01": 1} == world.counts(world.audit_url)


def test_non_tx_failure_keeps_its_rows_and_becomes_an_issue(world: Scenario) -> None:
    """A NON_TX change that raises keeps what it wrote (autocommit) and blocks the next run."""
    stage = world.stage(ChangeSource("change-01", transactional=False))
    target = world.target(world.audit_url)
    world.fail("change-01")

    with pytest.raises(ChangeFailedError):
        world.run(stage, target)
    with pytest.raises(ManualInterventionRequired) as caught:
        world.run(stage, target)

    assert {"change-01": 1} == world.counts(world.audit_url)
    assert (["change-01"], True) == (
        [i.change_id for i in caught.value.issues],
        "change-01" in str(caught.value),
    )


# -- bad input: found before anything is written ---------------------------------------------

_UNKNOWN_PARAMETER = [ChangeSource("change-01", params="connection, cursor")]
_DUPLICATE_ID = [ChangeSource("change-01"), ChangeSource("change-01")]
_UNKNOWN_TARGET = [ChangeSource("change-01", target="nowhere")]
_BROKEN_MODULE = [ChangeSource("change-01", source="import no_such_module_anywhere_xyz\n")]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (_UNKNOWN_PARAMETER, "cursor"),
        (_DUPLICATE_ID, "change-01"),
        (_UNKNOWN_TARGET, "nowhere"),
        (_BROKEN_MODULE, "no_such_module_anywhere_xyz"),
        (None, "fl_missing_"),
    ],
    ids=["unknown-parameter", "duplicate-id", "unknown-target", "broken-module", "no-package"],
)
def test_bad_input_is_refused_before_anything_is_written(
    world: Scenario, changes: list[ChangeSource] | None, named: str
) -> None:
    """Bad change units raise ValidationError naming the fault; no table is even created."""
    if changes is None:
        stage = Stage("main", f"fl_missing_{uuid.uuid4().hex[:8]}")
    else:
        stage = world.stage(*changes)
    store = world.store()
    target = SqlTargetSystem(TARGET_ID, url=world.other_url, marker_table=world.marker_table)

    with pytest.raises(ValidationError) as caught:
        run_pipeline(store, [stage], [target])

    assert named in str(caught.value)
    assert (False, set(), False) == (
        store.is_initialized(),
        {world.backend.audit_table, world.backend.lock_table} & world.tables(world.audit_url),
        Path(world.other_url.removeprefix("sqlite:///")).exists(),
    )
