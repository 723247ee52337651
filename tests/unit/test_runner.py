"""The runner against the memory store and target: write sequences, recovery, blocking, lock."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from flamingock_provider.changes import Stage
from flamingock_provider.engine.errors import ChangeFailedError, ManualInterventionRequired
from flamingock_provider.engine.lock import DEFAULT_KEY
from flamingock_provider.engine.model import AuditState, Recovery, TxStrategy
from flamingock_provider.engine.result import Outcome

S = AuditState
TX = TxStrategy
O = Outcome  # noqa: E741 - reads like the table it is
MI = Recovery.MANUAL_INTERVENTION
RETRY = Recovery.ALWAYS_RETRY
TRANSACTIONAL = [TX.TX_SHARED, TX.TX_SEPARATE_WITH_MARKER, TX.TX_SEPARATE_NO_MARKER]


def _non_tx(change_id: str, **spec: object) -> dict[str, object]:
    return {"id": change_id, "transactional": False, **spec}


# -- the happy path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "transactional", "expected"),
    [
        pytest.param(TX.TX_SEPARATE_WITH_MARKER, True, TX.TX_SEPARATE_WITH_MARKER, id="marker"),
        pytest.param(TX.TX_SEPARATE_NO_MARKER, True, TX.TX_SEPARATE_NO_MARKER, id="no-marker"),
        pytest.param(TX.TX_SHARED, True, TX.TX_SHARED, id="shared"),
        pytest.param(TX.NON_TX, True, TX.NON_TX, id="target-without-transactions"),
        pytest.param(TX.TX_SEPARATE_WITH_MARKER, False, TX.NON_TX, id="non-transactional-change"),
    ],
)
def test_first_run_applies_every_change_in_order(scenario, strategy, transactional, expected):
    """Every change runs once, in stage order, recorded STARTED then APPLIED with its strategy."""

    def spec(change_id: str) -> dict[str, object]:
        return {"id": change_id, "transactional": transactional}

    sc = scenario({"s1": [spec("c1"), spec("c2")], "s2": [spec("c3")]}, strategy=strategy)

    result = sc.run()

    summary = result.summary()
    assert ["c1", "c2", "c3"] == summary["applied"]
    assert ([], [], []) == (summary["skipped"], summary["failed"], summary["issues"])
    assert {"s1": "COMPLETED", "s2": "COMPLETED"} == {
        name: stage["status"] for name, stage in summary["stages"].items()
    }
    assert ["c1", "c2", "c3"] == sc.calls()
    for change_id in ("c1", "c2", "c3"):
        assert [(S.STARTED, expected), (S.APPLIED, expected)] == [
            (e.state, e.tx_strategy) for e in sc.entries(change_id)
        ]
    assert {"c1": "applied", "c2": "applied", "c3": "applied"} == sc.target.data
    assert set() == sc.target.markers
    assert result.lock_taken
    assert sc.store.lock_holder(DEFAULT_KEY) is None


def test_audit_entries_carry_the_changes_facts(scenario):
    """Each entry names execution, stage, author, class, target, order, recovery and tx flag."""
    sc = scenario({"s1": ["c0", {"id": "c1", "author": "data-team", "recovery": RETRY}]})

    result = sc.run()

    started, applied = sc.entries("c1")
    expected = {
        "execution_id": result.execution_id,
        "stage_id": "s1",
        "author": "data-team",
        "invoked_class": f"{sc.workspace.name('s1')}._0002__c1.Change",
        "invoked_method": "apply",
        "target_system_id": "db",
        "change_order": "0002",
        "recovery_strategy": RETRY,
        "transaction_flag": True,
        "tx_strategy": TX.TX_SEPARATE_WITH_MARKER,
        "error_trace": None,
    }
    for entry in (started, applied):
        assert expected == {k: getattr(entry, k) for k in expected}
        assert entry.source_file.endswith("_0002__c1.py")
    assert started.created_at < applied.created_at


def test_second_run_skips_everything_and_takes_no_lock(scenario, outcomes_of):
    """With everything applied, a run reads, skips every change, and never touches the lock."""
    sc = scenario({"s1": ["c1", "c2"], "s2": ["c3"]})
    sc.run()
    appends, acquires = sc.store.calls["append"], sc.store.calls["lock_acquire"]

    result = sc.run()

    assert ["c1", "c2", "c3"] == result.summary()["skipped"]
    assert {"c1": O.SKIPPED, "c2": O.SKIPPED, "c3": O.SKIPPED} == outcomes_of(result)
    assert not result.lock_taken
    assert acquires == sc.store.calls["lock_acquire"]
    assert appends == sc.store.calls["append"]
    assert ["c1", "c2", "c3"] == sc.calls()


def test_only_the_new_change_runs_when_one_is_added(scenario, workspace, outcomes_of):
    """A later run applies just the changes the audit store has not seen."""
    sc = scenario({"s1": ["c1"]})
    sc.run()
    workspace.write_change(workspace.root / workspace.name("s1"), "_0002__c2", id="c2")
    sc.runner.pipeline = workspace.load([Stage("s1", workspace.name("s1"))], {"db": {"data"}})

    result = sc.run()

    assert {"c1": O.SKIPPED, "c2": O.APPLIED} == outcomes_of(result)
    assert ["c1", "c2"] == sc.calls()


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(TxStrategy))
def test_a_failing_change_stops_its_stage_and_every_later_stage(scenario, outcomes_of, strategy):
    """The first failure is recorded FAILED and raised; nothing after it runs."""
    sc = scenario({"s1": ["c1", "c2", "c3"], "s2": ["c4"]}, strategy=strategy)
    sc.fail("apply", "c2", RuntimeError("boom"))

    with pytest.raises(ChangeFailedError) as excinfo:
        sc.run()

    err = excinfo.value
    assert ("c2", "s1") == (err.change_id, err.stage)
    assert "boom" in str(err)
    assert {"c1": O.APPLIED, "c2": O.FAILED, "c3": O.NOT_RUN, "c4": O.NOT_RUN} == outcomes_of(
        err.result
    )
    assert {"s1": "FAILED", "s2": "NOT_RUN"} == {
        name: stage["status"] for name, stage in err.result.summary()["stages"].items()
    }
    assert ["c1", "c2"] == sc.calls()
    assert S.FAILED == sc.latest("c2").state
    assert "RuntimeError: boom" in sc.latest("c2").error_trace
    assert {"c1", "c2"} == set(sc.store.read_latest())
    assert sc.store.lock_holder(DEFAULT_KEY) is None


@pytest.mark.parametrize("strategy", TRANSACTIONAL)
def test_a_transactional_failure_leaves_the_target_untouched_and_is_retried(
    scenario, outcomes_of, strategy
):
    """A transactional change that raises is rolled back by its transaction; next run applies."""
    sc = scenario({"s1": ["c1"]}, strategy=strategy)
    sc.target.data["before"] = 1
    sc.fail("apply", "c1", RuntimeError("boom"))

    with pytest.raises(ChangeFailedError):
        sc.run()

    assert {"before": 1} == sc.target.data  # apply wrote c1, the rollback discarded it
    assert [S.STARTED, S.FAILED] == sc.history("c1")
    assert {strategy} == {e.tx_strategy for e in sc.entries("c1")}
    assert set() == sc.target.markers

    sc.heal()
    result = sc.run()

    assert {"c1": O.APPLIED} == outcomes_of(result)
    assert [S.STARTED, S.FAILED, S.STARTED, S.APPLIED] == sc.history("c1")
    assert {"before": 1, "c1": "applied"} == sc.target.data
    assert ["c1", "c1"] == sc.calls()


def test_a_non_transactional_failure_runs_the_rollback(scenario, outcomes_of):
    """NON_TX: STARTED, FAILED, then the rollback runs and ROLLED_BACK is recorded."""
    sc = scenario({"s1": [_non_tx("c1", rollback=True)]})
    sc.fail("apply", "c1", RuntimeError("boom"))

    with pytest.raises(ChangeFailedError):
        sc.run()

    assert [("apply", "c1"), ("rollback", "c1")] == sc.common.CALLS
    assert [S.STARTED, S.FAILED, S.ROLLED_BACK] == sc.history("c1")
    assert "rollback" == sc.latest("c1").invoked_method
    assert {} == sc.target.data  # the rollback removed the partial effect

    sc.heal()
    assert {"c1": O.APPLIED} == outcomes_of(sc.run())


@pytest.mark.parametrize(
    ("recovery", "blocked"),
    [pytest.param(MI, True, id="manual"), pytest.param(RETRY, False, id="retry")],
)
def test_a_failed_rollback_is_an_issue_unless_always_retry(
    scenario, outcomes_of, recovery, blocked
):
    """ROLLBACK_FAILED blocks the whole stage next run, unless the change is ALWAYS_RETRY."""
    sc = scenario(
        {"s1": ["c1", _non_tx("c2", rollback=True, recovery=recovery), "c3"], "s2": ["c4"]}
    )
    sc.fail("apply", "c2", RuntimeError("boom"))
    sc.fail("rollback", "c2", RuntimeError("rollback broke"))

    with pytest.raises(ChangeFailedError):
        sc.run()

    assert [S.STARTED, S.FAILED, S.ROLLBACK_FAILED] == sc.history("c2")
    assert "rollback broke" in sc.latest("c2").error_trace
    calls_before = list(sc.common.CALLS)
    sc.heal()

    if blocked:
        with pytest.raises(ManualInterventionRequired) as excinfo:
            sc.run()
        err = excinfo.value
        assert "s1" == err.stage
        assert ["c2"] == [i.change_id for i in err.issues]
        assert "'c2'" in str(err)
        assert "ROLLBACK_FAILED" in str(err)
        assert calls_before == sc.common.CALLS  # nothing of the stage ran
        assert {"c1": O.SKIPPED, "c2": O.BLOCKED, "c3": O.NOT_RUN, "c4": O.NOT_RUN} == (
            outcomes_of(err.result)
        )
    else:
        result = sc.run()
        assert {"c1": O.SKIPPED, "c2": O.APPLIED, "c3": O.APPLIED, "c4": O.APPLIED} == (
            outcomes_of(result)
        )


@pytest.mark.parametrize(
    ("recovery", "blocked"),
    [pytest.param(MI, True, id="manual"), pytest.param(RETRY, False, id="retry")],
)
def test_a_non_transactional_failure_without_rollback_blocks_unless_always_retry(
    scenario, outcomes_of, recovery, blocked
):
    """NON_TX FAILED may have left partial effects: an issue, or retried when ALWAYS_RETRY."""
    sc = scenario({"s1": [_non_tx("c1", recovery=recovery)]})
    sc.fail("apply", "c1", RuntimeError("boom"))
    with pytest.raises(ChangeFailedError):
        sc.run()
    sc.heal()

    if blocked:
        with pytest.raises(ManualInterventionRequired, match="'c1'"):
            sc.run()
        assert ["c1"] == sc.calls()
        assert S.FAILED == sc.latest("c1").state
    else:
        assert {"c1": O.APPLIED} == outcomes_of(sc.run())
        assert ["c1", "c1"] == sc.calls()
        assert S.APPLIED == sc.latest("c1").state


# -- crashes (the process dies inside apply) ----------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "recovery", "left", "next_run"),
    [
        pytest.param(TX.NON_TX, MI, [S.STARTED], "issue", id="non-tx-manual"),
        pytest.param(TX.NON_TX, RETRY, [S.STARTED], "apply", id="non-tx-retry"),
        pytest.param(TX.TX_SEPARATE_NO_MARKER, MI, [S.STARTED], "issue", id="no-marker-manual"),
        pytest.param(TX.TX_SEPARATE_NO_MARKER, RETRY, [S.STARTED], "apply", id="no-marker-retry"),
        pytest.param(TX.TX_SEPARATE_WITH_MARKER, MI, [S.STARTED], "apply", id="marker"),
        pytest.param(TX.TX_SHARED, MI, [], "apply", id="shared"),
    ],
)
def test_a_crash_inside_apply(scenario, outcomes_of, strategy, recovery, left, next_run):
    """A crash leaves what its write sequence promises, and the next run acts on it."""
    sc = scenario({"s1": [{"id": "c1", "recovery": recovery}, "c2"]}, strategy=strategy)
    sc.fail("apply", "c1", sc.common.Crash("power cut"))

    with pytest.raises(sc.common.Crash):
        sc.run()

    assert left == sc.history("c1")
    assert [] == sc.history("c2")
    assert sc.store.lock_holder(DEFAULT_KEY) is None  # released on the way out
    if strategy.transactional:
        assert {} == sc.target.data
    sc.heal()

    if next_run == "issue":
        with pytest.raises(ManualInterventionRequired, match=r"'c1'.*is STARTED"):
            sc.run()
        assert ["c1"] == sc.calls()
    else:
        result = sc.run()
        assert {"c1": O.APPLIED, "c2": O.APPLIED} == outcomes_of(result)
        assert ["c1", "c1", "c2"] == sc.calls()  # the crashed attempt, then exactly one more
        assert [*left, S.STARTED, S.APPLIED] == sc.history("c1")


def test_marker_recovery_closes_a_started_entry_dated_in_our_future(scenario, outcomes_of):
    """A STARTED written by a host whose clock runs ahead is still closed by the recovery.

    The APPLIED entry is dated no earlier than the STARTED it resolves, so it becomes the latest.
    """
    sc = scenario({"s1": ["c1"]})
    ahead = sc.clock() + timedelta(hours=1)
    sc.record(
        "c1", S.STARTED, execution_id="X", tx_strategy=TX.TX_SEPARATE_WITH_MARKER, created_at=ahead
    )
    sc.target.markers.add(("c1", "X"))

    first = sc.run()
    second = sc.run()

    assert {"c1": O.RECOVERED} == outcomes_of(first)
    assert (S.APPLIED, "X") == (sc.latest("c1").state, sc.latest("c1").execution_id)
    assert {"c1": O.SKIPPED} == outcomes_of(second)
    assert [] == sc.calls()


@pytest.mark.parametrize(
    "marker", [pytest.param(True, id="marker-present"), pytest.param(False, id="marker-absent")]
)
def test_started_with_marker_is_resolved_by_the_marker(scenario, outcomes_of, marker):
    """STARTED under TX_SEPARATE_WITH_MARKER: a marker means committed (record APPLIED, skip)."""
    sc = scenario({"s1": ["c1", "c2"]})
    sc.record("c1", S.STARTED, execution_id="X", tx_strategy=TX.TX_SEPARATE_WITH_MARKER)
    if marker:  # committed, then the process died before APPLIED was written
        sc.target.markers.add(("c1", "X"))
        sc.target.data["c1"] = "applied"

    result = sc.run()

    latest = sc.latest("c1")
    assert S.APPLIED == latest.state
    assert {"c1": "applied", "c2": "applied"} == sc.target.data
    assert set() == sc.target.markers
    if marker:
        assert {"c1": O.RECOVERED, "c2": O.APPLIED} == outcomes_of(result)
        assert ["c1"] == result.summary()["recovered"]
        assert ["c1"] == result.summary()["skipped"]
        assert "X" == latest.execution_id
        assert ["c2"] == sc.calls()
        assert [S.STARTED, S.APPLIED] == sc.history("c1")
    else:
        assert {"c1": O.APPLIED, "c2": O.APPLIED} == outcomes_of(result)
        assert result.execution_id == latest.execution_id
        assert ["c1", "c2"] == sc.calls()


@pytest.mark.parametrize(
    ("strategy", "left", "message", "next_run_blocked"),
    [
        pytest.param(
            TX.TX_SEPARATE_WITH_MARKER, [S.STARTED, S.FAILED], "commit lost", False, id="marker"
        ),
        pytest.param(
            TX.TX_SEPARATE_NO_MARKER, [S.STARTED], "commit outcome unknown", True, id="no-marker"
        ),
        pytest.param(TX.TX_SHARED, [S.STARTED, S.FAILED], "commit lost", False, id="shared"),
    ],
)
def test_a_failed_commit(scenario, outcomes_of, strategy, left, message, next_run_blocked):
    """A commit that raises: the marker proves it did not commit; without one, STARTED stays."""
    sc = scenario({"s1": ["c1"]}, strategy=strategy)

    def lose_commit() -> None:
        raise ConnectionError("commit lost")

    sc.target.before_commit = lose_commit

    with pytest.raises(ChangeFailedError, match=message):
        sc.run()

    assert left == sc.history("c1")
    assert {} == sc.target.data
    assert set() == sc.target.markers
    sc.target.before_commit = None

    if next_run_blocked:
        with pytest.raises(ManualInterventionRequired, match="'c1'"):
            sc.run()
    else:
        assert {"c1": O.APPLIED} == outcomes_of(sc.run())


@pytest.mark.parametrize(
    ("strategy", "seen_at_commit"),
    [
        pytest.param(TX.TX_SHARED, [], id="shared-inside-the-transaction"),
        pytest.param(TX.TX_SEPARATE_WITH_MARKER, [S.STARTED], id="separate-before-it"),
        pytest.param(TX.NON_TX, None, id="non-tx-no-commit"),
    ],
)
def test_where_started_is_written(scenario, strategy, seen_at_commit):
    """TX_SHARED writes STARTED inside the change's transaction; separate stores write it first."""
    sc = scenario({"s1": ["c1"]}, strategy=strategy)
    seen = []
    sc.target.before_commit = lambda: seen.append(sc.history("c1"))

    sc.run()

    assert ([] if seen_at_commit is None else [seen_at_commit]) == seen
    assert [S.STARTED, S.APPLIED] == sc.history("c1")


# -- issues and stages --------------------------------------------------------------------


def test_an_issue_blocks_its_stage_after_earlier_stages_ran(scenario, outcomes_of):
    """Earlier stages run; the blocked stage runs nothing; the error names every issue."""
    sc = scenario({"s1": ["c1"], "s2": ["c2", "c3", "c4"], "s3": ["c5"]})
    sc.record("c2", S.STARTED, execution_id="E2")
    sc.record("c3", S.FAILED, execution_id="E3", error_trace="ValueError: half done")

    with pytest.raises(ManualInterventionRequired) as excinfo:
        sc.run()

    err = excinfo.value
    message = str(err)
    assert "s2" == err.stage
    assert ["c2", "c3"] == [i.change_id for i in err.issues]
    for fragment in ("'c2'", "E2", "STARTED", "'c3'", "E3", "FAILED", "half done", "audit fix"):
        assert fragment in message
    assert ["c1"] == sc.calls()
    assert {
        "c1": O.APPLIED,
        "c2": O.BLOCKED,
        "c3": O.BLOCKED,
        "c4": O.NOT_RUN,
        "c5": O.NOT_RUN,
    } == outcomes_of(err.result)
    assert {"s1": "COMPLETED", "s2": "BLOCKED", "s3": "NOT_RUN"} == {
        name: stage["status"] for name, stage in err.result.summary()["stages"].items()
    }
    assert err.result.lock_taken
    assert 2 == len(err.result.issues)
    assert sc.store.lock_holder(DEFAULT_KEY) is None


@pytest.mark.parametrize(
    "applied_first",
    [pytest.param(False, id="issue-in-first-stage"), pytest.param(True, id="after-done-stage")],
)
def test_an_issue_with_nothing_pending_before_it_raises_without_the_lock(
    scenario, outcomes_of, applied_first
):
    """When the first stage with work holds an issue, the run raises and never locks or writes."""
    if applied_first:
        sc = scenario({"s0": ["c0"], "s1": ["c1", "c2"], "s2": ["c3"]})
        sc.runner.run()  # everything applied
        sc.record("c1", S.STARTED, execution_id="stuck")
    else:
        sc = scenario({"s1": ["c1", "c2"], "s2": ["c3"]})
        sc.record("c1", S.STARTED, execution_id="stuck")
    acquires, appends = sc.store.calls["lock_acquire"], sc.store.calls["append"]
    calls = list(sc.common.CALLS)

    with pytest.raises(ManualInterventionRequired, match="stuck") as excinfo:
        sc.run()

    assert acquires == sc.store.calls["lock_acquire"]
    assert appends == sc.store.calls["append"]
    assert calls == sc.common.CALLS
    assert not excinfo.value.result.lock_taken
    assert O.BLOCKED == outcomes_of(excinfo.value.result)["c1"]
    assert O.NOT_RUN == outcomes_of(excinfo.value.result)["c3"]


@pytest.mark.parametrize(
    ("mark", "expected", "runs"),
    [
        pytest.param(S.MANUAL_MARKED_AS_ROLLED_BACK, O.APPLIED, 2, id="rolled-back-reapplies"),
        pytest.param(S.MANUAL_MARKED_AS_APPLIED, O.SKIPPED, 1, id="applied-skips"),
    ],
)
def test_a_manual_mark_decides_the_next_run(scenario, outcomes_of, mark, expected, runs):
    """MANUAL_MARKED_AS_ROLLED_BACK is applied again; MANUAL_MARKED_AS_APPLIED is skipped."""
    sc = scenario({"s1": ["c1"]})
    sc.run()
    sc.record("c1", mark, author="flamingock-cli")

    result = sc.run()

    assert {"c1": expected} == outcomes_of(result)
    assert runs == len(sc.calls())


def test_fixing_an_issue_unblocks_its_stage(scenario, outcomes_of):
    """After `audit fix` marks the issue APPLIED, the rest of the stage runs."""
    sc = scenario({"s1": ["c1", "c2"]})
    sc.record("c1", S.ROLLBACK_FAILED)
    with pytest.raises(ManualInterventionRequired):
        sc.run()

    sc.record("c1", S.MANUAL_MARKED_AS_APPLIED, author="flamingock-cli")
    result = sc.run()

    assert {"c1": O.SKIPPED, "c2": O.APPLIED} == outcomes_of(result)
    assert ["c2"] == sc.calls()


# -- dry run and injection ----------------------------------------------------------------


def test_dry_run_on_a_fresh_store_writes_nothing(scenario):
    """A dry run reports every change pending and leaves the store uninitialized and empty."""
    sc = scenario({"s1": ["c1", "c2"], "s2": ["c3"]})

    result = sc.run(dry_run=True)

    summary = result.summary()
    assert ["c1", "c2", "c3"] == summary["pending"]
    assert summary["dry_run"]
    assert {"s1": "PLANNED", "s2": "PLANNED"} == {
        name: stage["status"] for name, stage in summary["stages"].items()
    }
    assert not sc.store.is_initialized()
    assert [] == sc.store.read_history()
    assert [] == sc.calls()
    assert 0 == sc.store.calls["lock_acquire"]
    assert 0 == sc.store.calls["append"]


def test_dry_run_reports_skipped_blocked_and_pending_without_writing(scenario, outcomes_of):
    """On a used store the dry run shows each change's fate and the issues, writing nothing.

    As in a real run, a blocked stage stops the pipeline: its own pending changes and every
    later stage's are NOT_RUN; pending changes before it are PENDING.
    """
    sc = scenario({"s0": ["c0"], "s1": ["c1"], "s2": ["c2", "c3"], "s3": ["c4"]})
    sc.record("c1", S.APPLIED)
    sc.record("c2", S.FAILED, execution_id="E")
    appends = sc.store.calls["append"]

    result = sc.run(dry_run=True)

    expected = {"c0": O.PENDING, "c1": O.SKIPPED, "c2": O.BLOCKED, "c3": O.NOT_RUN, "c4": O.NOT_RUN}
    assert expected == outcomes_of(result)
    assert 1 == len(result.issues)
    assert "'c2'" in result.issues[0]
    assert appends == sc.store.calls["append"]
    assert 0 == sc.store.calls["lock_acquire"]
    assert [] == sc.calls()


@pytest.mark.parametrize(
    "custom", [pytest.param(True, id="extra-injectables"), pytest.param(False, id="defaults")]
)
def test_context_and_log_are_injected(scenario, custom):
    """``context`` and ``log`` reach apply: the caller's, or ``{}`` and the runner's logger."""
    context = {"dag_run": "manual__1"}
    logger = logging.getLogger("flamingock.tests")
    options = {"extra_injectables": {"context": context}, "logger": logger} if custom else {}
    sc = scenario({"s1": [{"id": "c1", "params": ("data", "context", "log")}]}, **options)

    sc.run()

    injected = sc.common.INJECTED[("apply", "c1")]
    assert (context if custom else {}) == injected["context"]
    assert (logger if custom else logging.getLogger("flamingock")) is injected["log"]
    assert {"c1": "applied"} == sc.target.data
