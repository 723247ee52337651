"""The pure audit model: state priority, the latest-entry tie-break, the action table, issues."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from flamingock_provider.engine.model import (
    Action,
    AuditState,
    Issue,
    Recovery,
    TxStrategy,
    decide_action,
    issues_in,
    latest_entries,
)

S = AuditState
TX = TxStrategy
MI = Recovery.MANUAL_INTERVENTION
RETRY = Recovery.ALWAYS_RETRY
TRANSACTIONAL = (TX.TX_SHARED, TX.TX_SEPARATE_WITH_MARKER, TX.TX_SEPARATE_NO_MARKER)
UNCERTAIN_STARTED = (TX.NON_TX, TX.TX_SHARED, TX.TX_SEPARATE_NO_MARKER)


def _rows(
    states: tuple[AuditState, ...],
    strategies: tuple[TxStrategy, ...],
    recoveries: tuple[Recovery, ...],
    expected: Action | dict[Recovery, Action],
) -> list[object]:
    """Expand one row of the action table over every strategy and recovery it covers."""
    rows = []
    for state, strategy, recovery in itertools.product(states, strategies, recoveries):
        action = expected[recovery] if isinstance(expected, dict) else expected
        rows.append(
            pytest.param(
                state,
                strategy,
                recovery,
                action,
                id=f"{state.value}-{strategy.value}-{recovery.value}->{action.value}",
            )
        )
    return rows


UNLESS_RETRY = {MI: Action.MANUAL_INTERVENTION, RETRY: Action.APPLY}

# ARCHITECTURE.md §3, the action table, row by row.
ACTION_TABLE = [
    # APPLIED, MANUAL_MARKED_AS_APPLIED -> SKIP
    *_rows((S.APPLIED, S.MANUAL_MARKED_AS_APPLIED), tuple(TX), tuple(Recovery), Action.SKIP),
    # ROLLED_BACK, MANUAL_MARKED_AS_ROLLED_BACK -> APPLY
    *_rows(
        (S.ROLLED_BACK, S.MANUAL_MARKED_AS_ROLLED_BACK), tuple(TX), tuple(Recovery), Action.APPLY
    ),
    # FAILED, transactional -> APPLY (the transaction rolled it back)
    *_rows((S.FAILED,), TRANSACTIONAL, tuple(Recovery), Action.APPLY),
    # FAILED, NON_TX -> APPLY if ALWAYS_RETRY, else MANUAL_INTERVENTION
    *_rows((S.FAILED,), (TX.NON_TX,), tuple(Recovery), UNLESS_RETRY),
    # STARTED, TX_SEPARATE_WITH_MARKER -> the marker decides
    *_rows((S.STARTED,), (TX.TX_SEPARATE_WITH_MARKER,), tuple(Recovery), Action.CHECK_MARKER),
    # STARTED (any other strategy), ROLLBACK_FAILED -> APPLY if ALWAYS_RETRY, else MANUAL
    *_rows((S.STARTED,), UNCERTAIN_STARTED, tuple(Recovery), UNLESS_RETRY),
    *_rows((S.ROLLBACK_FAILED,), tuple(TX), tuple(Recovery), UNLESS_RETRY),
]


def test_no_entry_means_apply() -> None:
    """A change the audit store has never seen is applied."""
    assert Action.APPLY == decide_action(None)


@pytest.mark.parametrize(("state", "strategy", "recovery", "expected"), ACTION_TABLE)
def test_action_table(entry_factory, state, strategy, recovery, expected) -> None:
    """Every row of the action table maps the latest entry to the documented action."""
    entry = entry_factory(state=state, tx_strategy=strategy, recovery_strategy=recovery)

    assert expected == decide_action(entry)


def test_action_table_covers_every_state_strategy_and_recovery() -> None:
    """The table above leaves no (state, strategy, recovery) combination undecided."""
    covered = {(p.values[0], p.values[1], p.values[2]) for p in ACTION_TABLE}
    everything = set(itertools.product(AuditState, TxStrategy, Recovery))

    assert everything == covered


def test_states_rank_in_declared_order() -> None:
    """State priorities are 1..7 in the order ARCHITECTURE.md §3 lists the states."""
    expected = [
        ("STARTED", 1),
        ("APPLIED", 2),
        ("FAILED", 3),
        ("ROLLED_BACK", 4),
        ("ROLLBACK_FAILED", 5),
        ("MANUAL_MARKED_AS_APPLIED", 6),
        ("MANUAL_MARKED_AS_ROLLED_BACK", 7),
    ]

    assert expected == [(s.value, s.priority) for s in AuditState]


@pytest.mark.parametrize(
    ("older", "newer"),
    [pytest.param(o, n, id=f"{o.value}<{n.value}") for o, n in itertools.product(S, S)],
)
def test_latest_entry_is_the_newest(entry_factory, older, newer) -> None:
    """A newer createdAt wins whatever the two states' priorities."""
    first = entry_factory(state=older, execution_id="e1")
    second = entry_factory(
        state=newer, execution_id="e2", created_at=first.created_at + timedelta(milliseconds=1)
    )

    for history in ([first, second], [second, first]):
        assert second == latest_entries(history)["c1"]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        pytest.param(low, high, id=f"{low.value}<{high.value}")
        for low, high in itertools.combinations(S, 2)
    ],
)
def test_equal_created_at_is_broken_by_state_priority(entry_factory, low, high) -> None:
    """On a createdAt tie the state with the higher priority is the latest."""
    weaker = entry_factory(state=low)
    stronger = entry_factory(state=high)

    for history in ([weaker, stronger], [stronger, weaker]):
        assert stronger == latest_entries(history)["c1"]


def test_latest_entries_keeps_one_entry_per_change(entry_factory) -> None:
    """The snapshot holds exactly one entry per change id, each that change's latest."""
    start = entry_factory().created_at
    history = [
        entry_factory("a", S.STARTED, created_at=start),
        entry_factory("b", S.STARTED, created_at=start),
        entry_factory("a", S.APPLIED, created_at=start + timedelta(seconds=1)),
        entry_factory("b", S.FAILED, created_at=start + timedelta(seconds=2)),
    ]

    latest = latest_entries(history)

    assert {"a": S.APPLIED, "b": S.FAILED} == {cid: e.state for cid, e in latest.items()}


def test_latest_entries_of_nothing_is_empty() -> None:
    """An empty history has an empty snapshot."""
    assert {} == latest_entries([])


def test_issues_are_the_changes_that_need_a_person_sorted_by_stage_then_id(entry_factory) -> None:
    """issues_in returns exactly the MANUAL_INTERVENTION changes, ordered by (stage, change)."""
    latest = {
        "ok": entry_factory("ok", S.APPLIED, stage_id="a"),
        "retry": entry_factory("retry", S.STARTED, recovery_strategy=RETRY, stage_id="a"),
        "marker": entry_factory("marker", S.STARTED, tx_strategy=TX.TX_SEPARATE_WITH_MARKER),
        "tx-failed": entry_factory("tx-failed", S.FAILED, tx_strategy=TX.TX_SHARED),
        "z-started": entry_factory("z-started", S.STARTED, stage_id="a"),
        "failed": entry_factory("failed", S.FAILED, stage_id="b"),
        "rb-failed": entry_factory("rb-failed", S.ROLLBACK_FAILED, stage_id="a"),
    }

    issues = issues_in(latest)

    assert [("a", "rb-failed"), ("a", "z-started"), ("b", "failed")] == [
        (i.stage_id, i.change_id) for i in issues
    ]
    assert [latest["rb-failed"], latest["z-started"], latest["failed"]] == [i.entry for i in issues]


def test_no_issues_when_everything_is_settled(entry_factory) -> None:
    """A snapshot of applied and retryable changes holds no issue."""
    latest = {
        "a": entry_factory("a", S.APPLIED),
        "b": entry_factory("b", S.FAILED, recovery_strategy=RETRY),
    }

    assert [] == issues_in(latest)


def test_issue_description_names_change_stage_state_execution_and_error(entry_factory) -> None:
    """An issue's one-line description carries what a person needs to find the change."""
    entry = entry_factory(
        "create-orders",
        S.FAILED,
        stage_id="schema",
        execution_id="exec-42",
        error_trace="Traceback (most recent call last):\n  ...\nRuntimeError: disk full\n",
    )

    text = Issue("create-orders", "schema", entry).describe()

    for fragment in ("'create-orders'", "'schema'", "FAILED", "exec-42", "RuntimeError: disk full"):
        assert fragment in text


def test_issue_description_survives_a_blank_error_trace(entry_factory) -> None:
    """A whitespace-only error trace (e.g. read back from a padded column) is simply omitted."""
    entry = entry_factory("c1", S.FAILED, error_trace="\n  \n")

    assert "'c1'" in Issue("c1", "s1", entry).describe()
