"""Issues in the engine: finding them, explaining them, resolving them, listing the history.

Everything runs on the memory store; the runner stories use the unit ``scenario`` factory, so a
crash is a ``Crash`` (a BaseException the runner does not catch) raised from inside ``apply``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import pytest

from flamingock_provider.engine.errors import (
    AuditStoreError,
    ChangeFailedError,
    ManualInterventionRequired,
    ValidationError,
)
from flamingock_provider.engine.issues import (
    DEFAULT_FIX_AUTHOR,
    Resolution,
    audit_list,
    checked_changes,
    filter_issues,
    fix_issue,
    get_issue,
    guidance,
    list_issues,
    scan,
)
from flamingock_provider.engine.model import (
    Action,
    AuditEntry,
    AuditState,
    Issue,
    Recovery,
    TxStrategy,
    decide_action,
    issues_in,
)
from flamingock_provider.stores.memory import MemoryAuditStore

S = AuditState
TX = TxStrategy
MI = Recovery.MANUAL_INTERVENTION
RETRY = Recovery.ALWAYS_RETRY


class CountingStore(MemoryAuditStore):
    """A memory store that counts how often the history is read."""

    def __init__(self) -> None:
        super().__init__("counting")
        self.reads = 0

    def read_latest(self) -> Mapping[str, AuditEntry]:
        self.reads += 1
        return super().read_latest()

    def read_history(self, since=None):
        self.reads += 1
        return super().read_history(since)


class UnreadableStore(MemoryAuditStore):
    """A store whose history read fails, as a SQL store's does when its tables are missing."""

    def __init__(self, initialized: bool) -> None:
        super().__init__("unreadable")
        self.initialized = initialized

    def read_latest(self) -> Mapping[str, AuditEntry]:
        raise AuditStoreError("unreadable store: read failed", store="x", operation="read")


@pytest.fixture
def store_with(entry_factory, fake_clock):
    """Build a memory store holding the given entries: ``store_with(("c1", S.STARTED), ...)``.

    Each tuple is ``(change_id, state)`` or ``(change_id, state, {field: value})``; entries are
    created one second apart, in the order given, each under its own execution id.
    """

    def build(*rows):
        store = CountingStore()
        store.initialize()
        for position, row in enumerate(rows):
            change_id, state, *rest = row
            fields = {
                "execution_id": f"exec-{position}",
                "created_at": fake_clock.at(position),
                **(rest[0] if rest else {}),
            }
            store.append(entry_factory(change_id, state, **fields))
        return store

    return build


def ids(issues: list[Issue]) -> list[str]:
    """The change ids of some issues, in their order."""
    return [issue.change_id for issue in issues]


# A store with one issue per uncertain state, in two stages, and two healthy changes.
MIXED = (
    ("ok-applied", S.APPLIED, {"stage_id": "schema"}),
    ("crashed", S.STARTED, {"stage_id": "schema"}),
    ("partial", S.FAILED, {"stage_id": "data"}),
    ("undo-failed", S.ROLLBACK_FAILED, {"stage_id": "data"}),
    ("tx-failed", S.FAILED, {"stage_id": "data", "tx_strategy": TX.TX_SEPARATE_NO_MARKER}),
)


# -- Resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("APPLIED", Resolution.APPLIED),
        ("ROLLED_BACK", Resolution.ROLLED_BACK),
        ("applied", Resolution.APPLIED),
        (" rolled_back ", Resolution.ROLLED_BACK),
        (Resolution.ROLLED_BACK, Resolution.ROLLED_BACK),
    ],
)
def test_resolution_parses_names_in_any_case(value, expected):
    """A resolution is its name, in any case and with stray spaces, or the member itself."""
    assert expected == Resolution.parse(value)


@pytest.mark.parametrize("value", ["", "DONE", "MANUAL_MARKED_AS_APPLIED", "applied!"])
def test_invalid_resolution_is_a_validation_error_naming_both_choices(value):
    """Anything else is a ValidationError that names the value and both valid resolutions."""
    with pytest.raises(ValidationError) as raised:
        Resolution.parse(value)

    assert (repr(value) in str(raised.value), "APPLIED" in str(raised.value)) == (True, True)
    assert "ROLLED_BACK" in str(raised.value)


def test_resolutions_map_to_the_manual_audit_states():
    """APPLIED writes MANUAL_MARKED_AS_APPLIED; ROLLED_BACK writes MANUAL_MARKED_AS_ROLLED_BACK."""
    expected = {
        "APPLIED": S.MANUAL_MARKED_AS_APPLIED,
        "ROLLED_BACK": S.MANUAL_MARKED_AS_ROLLED_BACK,
    }
    assert expected == {r.name: r.value for r in Resolution}


# -- scan (sensor and trigger) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("stages", "change_ids", "expected_issues", "expected_checked"),
    [
        pytest.param(
            None,
            None,
            ["partial", "undo-failed", "crashed"],
            ["crashed", "ok-applied", "partial", "tx-failed", "undo-failed"],
            id="everything",
        ),
        pytest.param(["schema"], None, ["crashed"], ["crashed", "ok-applied"], id="one-stage"),
        pytest.param(
            ["data"],
            None,
            ["partial", "undo-failed"],
            ["partial", "tx-failed", "undo-failed"],
            id="other-stage",
        ),
        pytest.param(["nowhere"], None, [], [], id="unknown-stage"),
        pytest.param(
            None, ["ok-applied", "partial"], ["partial"], ["ok-applied", "partial"], id="changes"
        ),
        pytest.param(
            ["schema"], ["ok-applied", "partial"], [], ["ok-applied"], id="stage-and-changes"
        ),
        pytest.param(None, [], [], [], id="no-changes"),
    ],
)
def test_scan_limits_issues_and_checked_changes_to_the_filters(
    store_with, stages, change_ids, expected_issues, expected_checked
):
    """scan returns the open issues within ``stages``/``change_ids`` and the ids it covered."""
    store = store_with(*MIXED)

    issues, checked = scan(store, stages, change_ids)

    assert (expected_issues, expected_checked) == (ids(issues), checked)


def test_scan_reads_the_store_exactly_once(store_with):
    """One poke costs one read of the store, whatever the number of changes and filters."""
    store = store_with(*MIXED)
    store.reads = 0

    scan(store, stages=["data"], change_ids=["partial", "crashed"])

    assert 1 == store.reads


def test_scan_of_a_store_that_was_never_used_finds_nothing():
    """A store without tables has run nothing: no issue, nothing checked, no error."""
    assert ([], []) == scan(MemoryAuditStore())
    assert ([], []) == scan(UnreadableStore(initialized=False))


def test_scan_of_an_unreadable_store_raises():
    """A store whose tables exist but cannot be read is an error, never "no issues"."""
    with pytest.raises(AuditStoreError, match="read failed"):
        scan(UnreadableStore(initialized=True))


def test_checked_changes_are_sorted_ids_of_the_store(store_with):
    """Without filters the checked ids are every change the store knows, sorted."""
    latest = store_with(("b", S.APPLIED), ("a", S.STARTED), ("c", S.FAILED)).read_latest()

    assert ["a", "b", "c"] == checked_changes(latest)


def test_checked_changes_leave_out_ids_the_store_does_not_know(store_with):
    """A requested change id that the store has no record of was not checked."""
    latest = store_with(("known", S.APPLIED)).read_latest()

    assert ["known"] == checked_changes(latest, change_ids=["known", "typo-change"])


def test_filter_issues_keeps_everything_without_filters(store_with):
    """No stage and no change filter: every issue is kept, in its order."""
    issues = issues_in(store_with(*MIXED).read_latest())

    assert issues == filter_issues(issues)


# -- list_issues / get_issue -------------------------------------------------------------


def test_list_issues_sorted_by_stage_then_change(store_with):
    """Open issues are listed by stage, then change id; healthy and transactional ones are not."""
    store = store_with(*MIXED)

    assert ["partial", "undo-failed", "crashed"] == ids(list_issues(store))


def test_list_issues_filters_like_scan(store_with):
    """``stages`` and ``change_ids`` limit the listing."""
    store = store_with(*MIXED)

    actual = (
        ids(list_issues(store, stages=["schema"])),
        ids(list_issues(store, change_ids=["undo-failed", "ok-applied"])),
    )
    assert (["crashed"], ["undo-failed"]) == actual


def test_list_issues_of_a_store_that_was_never_used_is_empty():
    """A store without tables lists no issue (and does not create them)."""
    store = MemoryAuditStore()

    assert ([], False) == (list_issues(store), store.is_initialized())


def test_get_issue_without_a_change_id_returns_the_oldest_open_issue(store_with):
    """``get_issue(store)`` is the issue created first, whatever its stage."""
    # "late" started first, but its open issue is the FAILED entry written after "early".
    store = store_with(("late", S.STARTED), ("early", S.STARTED), ("late", S.FAILED))

    issue = get_issue(store)

    assert issue is not None
    assert ("early", S.STARTED) == (issue.change_id, issue.state)


def test_get_issue_without_issues_returns_none(store_with):
    """With every change healthy (or no store at all) there is no issue to get."""
    assert (None, None) == (get_issue(store_with(("c1", S.APPLIED))), get_issue(MemoryAuditStore()))


def test_get_issue_of_a_change_returns_its_latest_entry(store_with):
    """``get_issue(store, id)`` is that change's issue, built from its latest entry."""
    store = store_with(*MIXED)

    issue = get_issue(store, "undo-failed")

    assert issue is not None
    assert ("undo-failed", "data", S.ROLLBACK_FAILED) == (
        issue.change_id,
        issue.stage_id,
        issue.state,
    )
    assert store.read_latest()["undo-failed"] == issue.entry


@pytest.mark.parametrize(
    ("change_id", "message"),
    [
        ("no-such-change", "Unknown change id 'no-such-change'"),
        ("ok-applied", "'ok-applied' has no issue (its latest state is APPLIED)"),
        ("tx-failed", "'tx-failed' has no issue (its latest state is FAILED)"),
    ],
)
def test_get_issue_of_an_unknown_or_healthy_change_is_a_validation_error(
    store_with, change_id, message
):
    """A change id the store does not know, or one without an issue: ValidationError saying so."""
    with pytest.raises(ValidationError) as raised:
        get_issue(store_with(*MIXED), change_id)

    assert message in str(raised.value)


# -- fix_issue ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "state", "next_action"),
    [
        ("APPLIED", S.MANUAL_MARKED_AS_APPLIED, Action.SKIP),
        ("ROLLED_BACK", S.MANUAL_MARKED_AS_ROLLED_BACK, Action.APPLY),
    ],
)
def test_fix_appends_a_manual_entry_that_closes_the_issue(
    store_with, fake_clock, resolution, state, next_action
):
    """A fix appends one manual entry: the issue is gone and the action follows the resolution.

    APPLIED: the change is skipped from now on; ROLLED_BACK: the next run applies it again.
    """
    store = store_with(("c1", S.APPLIED), ("c2", S.STARTED, {"execution_id": "crash-1"}))
    fake_clock.advance(60)
    before = store.read_history()

    entry = fix_issue(store, "c2", resolution, author="ada", clock=fake_clock)

    assert [*before, entry] == store.read_history()
    assert (state, next_action) == (entry.state, decide_action(store.read_latest()["c2"]))
    assert [] == list_issues(store)


def test_fix_entry_keeps_the_changes_facts_and_records_who_and_what(store_with, fake_clock):
    """The manual entry keeps stage, target, strategy and recovery; it names author and cause."""
    crashed = {
        "execution_id": "crash-1",
        "stage_id": "data",
        "target_system_id": "orders-db",
        "tx_strategy": TX.NON_TX,
        "invoked_class": "pkg._0001__c1.Change",
        "change_order": "0001",
        "error_trace": "Traceback...\nRuntimeError: boom",
    }
    store = store_with(("c1", S.FAILED, crashed))
    fake_clock.advance(60)

    entry = fix_issue(store, "c1", Resolution.APPLIED, author="  ada  ", clock=fake_clock)

    assert entry.execution_id not in ("crash-1", "")
    expected = {
        "stage_id": "data",
        "target_system_id": "orders-db",
        "tx_strategy": TX.NON_TX,
        "recovery_strategy": MI,
        "invoked_class": "pkg._0001__c1.Change",
        "change_order": "0001",
        "author": "ada",
        "created_at": fake_clock.now,
        "invoked_method": "manual",
        "error_trace": None,
        "metadata": {"resolvedState": "FAILED", "resolvedExecutionId": "crash-1"},
    }
    assert expected == {name: getattr(entry, name) for name in expected}


def test_fix_author_defaults_to_the_cli(store_with):
    """Without an author the entry says the CLI resolved it."""
    entry = fix_issue(store_with(("c1", S.STARTED)), "c1", "APPLIED")

    assert ("flamingock-cli", "flamingock-cli") == (DEFAULT_FIX_AUTHOR, entry.author)


@pytest.mark.parametrize(
    ("change_id", "resolution", "author", "message"),
    [
        pytest.param("no-such-change", "APPLIED", "ada", "Unknown change id", id="unknown"),
        pytest.param("ok-applied", "APPLIED", "ada", "has no issue", id="healthy"),
        pytest.param("tx-failed", "ROLLED_BACK", "ada", "has no issue", id="tx-failed"),
        pytest.param("crashed", "DONE", "ada", "Invalid resolution", id="resolution"),
        pytest.param("crashed", "APPLIED", "  ", "author", id="blank-author"),
    ],
)
def test_fix_with_bad_input_writes_nothing(store_with, change_id, resolution, author, message):
    """Every bad input is a ValidationError raised before anything is written."""
    store = store_with(*MIXED)
    before = store.read_history()

    with pytest.raises(ValidationError, match=message):
        fix_issue(store, change_id, resolution, author=author)

    assert before == store.read_history()


def test_fixing_the_same_issue_twice_is_refused(store_with):
    """Once resolved, the change has no issue: a second fix is refused and writes nothing."""
    store = store_with(("c1", S.STARTED))
    fix_issue(store, "c1", "APPLIED")
    before = store.read_history()

    with pytest.raises(ValidationError, match="MANUAL_MARKED_AS_APPLIED"):
        fix_issue(store, "c1", "ROLLED_BACK")

    assert before == store.read_history()


def test_fix_closes_the_issue_even_when_its_entry_is_dated_in_our_future(store_with, fake_clock):
    """A crash recorded by a worker whose clock runs 5 minutes ahead is still resolved."""
    future = fake_clock.now + timedelta(minutes=5)
    store = store_with(("c1", S.STARTED, {"created_at": future}))

    fix_issue(store, "c1", "APPLIED", clock=fake_clock)

    assert [] == list_issues(store)


# -- audit_list ---------------------------------------------------------------------------


def test_audit_list_shows_the_latest_entry_per_change_oldest_first(store_with):
    """By default one entry per change (its latest), ordered by creation time."""
    store = store_with(("b", S.STARTED), ("a", S.STARTED), ("b", S.APPLIED), ("c", S.FAILED))

    actual = [(e.change_id, e.state) for e in audit_list(store)]

    assert [("a", S.STARTED), ("b", S.APPLIED), ("c", S.FAILED)] == actual


def test_audit_list_history_shows_every_entry_oldest_first(store_with):
    """``history=True`` lists every entry, in the order they were written."""
    store = store_with(("b", S.STARTED), ("a", S.STARTED), ("b", S.APPLIED))

    actual = [(e.change_id, e.state) for e in audit_list(store, history=True)]

    assert [("b", S.STARTED), ("a", S.STARTED), ("b", S.APPLIED)] == actual


@pytest.mark.parametrize("history", [False, True], ids=["latest", "history"])
def test_audit_list_since_keeps_entries_at_or_after_that_time(store_with, fake_clock, history):
    """``since`` keeps the entries created at or after it, in either view."""
    store = store_with(("b", S.STARTED), ("a", S.APPLIED), ("b", S.APPLIED), ("c", S.FAILED))

    actual = audit_list(store, history=history, since=fake_clock.at(2))

    assert [("b", S.APPLIED), ("c", S.FAILED)] == [(e.change_id, e.state) for e in actual]


def test_audit_list_of_a_store_that_was_never_used_is_empty():
    """A store without tables has no history to list."""
    assert ([], []) == (
        audit_list(MemoryAuditStore()),
        audit_list(MemoryAuditStore(), history=True),
    )


# -- guidance -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "strategy", "explains"),
    [
        pytest.param(S.STARTED, TX.NON_TX, "the process died", id="started"),
        pytest.param(S.FAILED, TX.NON_TX, "a partial change", id="failed-non-tx"),
        pytest.param(S.ROLLBACK_FAILED, TX.NON_TX, "its rollback failed too", id="rb-failed"),
        pytest.param(
            S.STARTED,
            TX.TX_SEPARATE_NO_MARKER,
            "whether the commit happened is unknown",
            id="started-no-marker",
        ),
    ],
)
def test_guidance_explains_the_state_and_both_resolutions(store_with, state, strategy, explains):
    """Guidance says what probably happened and gives both ``audit fix`` commands."""
    fields = {"stage_id": "data", "tx_strategy": strategy, "target_system_id": "orders-db"}
    issue = get_issue(store_with(("c1", state, fields)), "c1")
    assert issue is not None

    text = guidance(issue)

    assert explains in text
    expected_lines = [
        "audit fix -c c1 -r APPLIED",
        "audit fix -c c1 -r ROLLED_BACK",
        "stage 'data'",
        "target system 'orders-db'",
        f"is {state.value} since",
    ]
    assert [] == [line for line in expected_lines if line not in text]


def test_guidance_quotes_the_last_line_of_the_error(store_with):
    """When the entry holds a trace, guidance quotes its last line (the exception)."""
    trace = "Traceback (most recent call last):\n  File 'x.py'\nRuntimeError: disk full\n"
    issue = get_issue(store_with(("c1", S.FAILED, {"error_trace": trace})), "c1")
    assert issue is not None

    assert "Error: RuntimeError: disk full" in guidance(issue).splitlines()


# -- with the runner ----------------------------------------------------------------------


def _non_tx(change_id, **spec):
    return {"id": change_id, "transactional": False, **spec}


def crash_in_c2(sc):
    """Run the scenario with ``c2`` dying mid-apply (the process is gone: a lone STARTED)."""
    sc.fail("apply", "c2", sc.common.Crash("killed"))
    with pytest.raises(sc.common.Crash):
        sc.run()
    sc.heal()


def test_crashed_non_tx_change_is_an_issue_that_blocks_its_stage(scenario):
    """A NON_TX change that died mid-apply is a STARTED issue; a re-run runs none of its stage."""
    sc = scenario({"s1": ["c1", _non_tx("c2"), "c3"]})
    crash_in_c2(sc)

    issues = list_issues(sc.store)

    assert [("c2", "s1", S.STARTED)] == [(i.change_id, i.stage_id, i.state) for i in issues]
    with pytest.raises(ManualInterventionRequired, match="c2"):
        sc.run()
    assert ["c1", "c2"] == sc.calls()


@pytest.mark.parametrize(
    ("resolution", "next_applied", "history_of_c2"),
    [
        ("APPLIED", ["c3"], [S.STARTED, S.MANUAL_MARKED_AS_APPLIED]),
        (
            "ROLLED_BACK",
            ["c2", "c3"],
            [S.STARTED, S.MANUAL_MARKED_AS_ROLLED_BACK, S.STARTED, S.APPLIED],
        ),
    ],
)
def test_after_a_fix_the_next_run_goes_on(scenario, resolution, next_applied, history_of_c2):
    """APPLIED: the next run skips the change and applies the rest; ROLLED_BACK re-applies it."""
    sc = scenario({"s1": ["c1", _non_tx("c2"), "c3"]})
    crash_in_c2(sc)

    fix_issue(sc.store, "c2", resolution, author="ada", clock=sc.clock)
    result = sc.run()

    assert next_applied == result.summary()["applied"]
    assert history_of_c2 == sc.history("c2")
    assert [] == list_issues(sc.store)


@pytest.mark.parametrize(
    ("failure", "left"),
    [("crash", S.STARTED), ("error", S.FAILED), ("rollback-error", S.ROLLBACK_FAILED)],
)
@pytest.mark.parametrize(
    ("recovery", "is_issue"), [(RETRY, False), (MI, True)], ids=["always-retry", "manual"]
)
def test_only_manual_intervention_changes_become_issues(
    scenario, failure, left, recovery, is_issue
):
    """A NON_TX change that dies, fails or fails to roll back is an issue unless ALWAYS_RETRY.

    An ALWAYS_RETRY change never becomes an issue: the next run simply applies it again.
    """
    spec = _non_tx("c2", recovery=recovery, rollback=failure == "rollback-error")
    sc = scenario({"s1": ["c1", spec]})
    if failure == "crash":
        crash_in_c2(sc)
    else:
        sc.fail("apply", "c2", RuntimeError("apply broke"))
        if failure == "rollback-error":
            sc.fail("rollback", "c2", RuntimeError("rollback broke"))
        with pytest.raises(ChangeFailedError, match="c2"):
            sc.run()
        sc.heal()

    assert left == sc.latest("c2").state
    expected = ["c2"] if is_issue else []
    assert (expected, expected) == (ids(list_issues(sc.store)), ids(scan(sc.store)[0]))
    if not is_issue:
        assert ["c2"] == sc.run().summary()["applied"]
