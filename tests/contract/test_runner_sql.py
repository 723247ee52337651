"""The runner end to end on the SQL stores: every write sequence, races, crashes, bad input.

Change packages are generated per test (`runner_kit`); each change inserts one row into a counter
table of its target, so "applied exactly once" is a row count. Crashes are real: a worker
process (`runner_worker.py`) is SIGKILLed mid-transaction, or kills itself just before the
runner writes ``APPLIED``, and a new runner picks up after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from runner_kit import (
    HANG_CHANGE_ENV,
    READY_FILE_ENV,
    TARGET_ID,
    ChangeSource,
    run_pipeline,
    write_package,
)
from sqlalchemy import Column, Integer, MetaData, String, Table, func, inspect, select
from store_backends import SqlBackend

from flamingock_provider.changes import Stage
from flamingock_provider.engine.errors import (
    ChangeFailedError,
    ManualInterventionRequired,
    ValidationError,
)
from flamingock_provider.engine.lock import DEFAULT_KEY
from flamingock_provider.engine.model import AuditEntry, AuditState, TxStrategy, issues_in
from flamingock_provider.engine.result import Outcome, RunResult
from flamingock_provider.stores.sql import SqlAuditStore
from flamingock_provider.targets.sql import SqlTargetSystem

WORKER = Path(__file__).with_name("runner_worker.py")
KIT_DIR = str(Path(__file__).parent)
WORKER_TIMEOUT = 60


class Scenario:
    """One test's world: the audit store's database, another database, packages, counters."""

    def __init__(self, backend: SqlBackend, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.counter = backend.name("counter")
        self.marker_table = backend.name("marker")
        self.root = tmp_path / "packages"
        self.flags = tmp_path / "flags"
        self.flags.mkdir()
        self.packages: list[str] = []
        self.audit_url = backend.url
        self.other_url = backend.other_database_url()

    # -- building blocks --------------------------------------------------------------------

    def store(self) -> SqlAuditStore:
        return self.backend()

    def stage(self, *changes: ChangeSource, probe_audit: bool = False) -> Stage:
        """A stage of freshly generated changes, in the order given."""
        package = f"fl_{uuid.uuid4().hex[:8]}_changes"
        write_package(
            self.root,
            package,
            changes,
            counter=self.counter,
            audit_table=self.backend.audit_table if probe_audit else None,
            flags=self.flags,
        )
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        self.packages.append(package)
        return Stage("main", package)

    def target(self, url: str, *, markers: bool = True) -> SqlTargetSystem:
        """The target system ``db`` on ``url``, its counter table created."""
        self._counter_table().create(self.backend.engine(url), checkfirst=True)
        return SqlTargetSystem(TARGET_ID, url=url, markers=markers, marker_table=self.marker_table)

    def fail(self, change_id: str, failing: bool = True) -> None:
        """Make ``change_id`` raise (after its insert) until called with ``failing=False``."""
        flag = self.flags / change_id
        if failing:
            flag.touch()
        else:
            flag.unlink()

    def run(self, stage: Stage, target: SqlTargetSystem, **options: Any) -> RunResult:
        store = self.store()
        try:
            return run_pipeline(store, [stage], [target], **options)
        finally:
            store.close()

    # -- what happened ----------------------------------------------------------------------

    def counts(self, url: str) -> dict[str, int]:
        """How many times each change inserted its row into ``url``'s counter table."""
        table = self._counter_table()
        with self.backend.engine(url).connect() as conn:
            rows = conn.execute(select(table.c.change_id, func.count()).group_by(table.c.change_id))
            return {change_id: count for change_id, count in rows}

    def seen_started(self, url: str) -> list[int | None]:
        table = self._counter_table()
        with self.backend.engine(url).connect() as conn:
            return list(conn.execute(select(table.c.seen_started)).scalars())

    def history(self, change_id: str | None = None) -> list[AuditEntry]:
        entries = self.store().read_history()
        return [e for e in entries if change_id is None or e.change_id == change_id]

    def tables(self, url: str) -> set[str]:
        return set(inspect(self.backend.engine(url)).get_table_names())

    def markers(self, url: str) -> int:
        table = Table(self.marker_table, MetaData(), autoload_with=self.backend.engine(url))
        with self.backend.engine(url).connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    # -- worker processes -------------------------------------------------------------------

    def worker(
        self,
        stage: Stage,
        target: SqlTargetSystem,
        *,
        lease: float = 10.0,
        env: dict[str, str] | None = None,
        **spec: Any,
    ) -> subprocess.Popen[str]:
        """Start `runner_worker.py` on this scenario's store, ``stage`` and ``target``."""
        full = {
            "sys_path": str(self.root),
            "stages": [[stage.name, stage.package]],
            "store": {
                "url": self.audit_url,
                "audit_table": self.backend.audit_table,
                "lock_table": self.backend.lock_table,
            },
            "targets": [
                {
                    "id": target.id,
                    "url": target.url,
                    "markers": target.markers,
                    "marker_table": target.marker_table,
                }
            ],
            "lease": lease,
            "wait": 30.0,
            "retry": 0.05,
            **spec,
        }
        return subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(full)],
            cwd=KIT_DIR,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_until_hang(
        self, stage: Stage, target: SqlTargetSystem, change_id: str
    ) -> subprocess.Popen[str]:
        """Start a worker that hangs inside ``change_id``; SIGKILL it there; return it, dead."""
        ready = self.tmp_path / f"ready-{uuid.uuid4().hex[:6]}"
        # A short lease: the dead runner's lock must expire quickly for the next runner.
        proc = self.worker(
            stage, target, lease=1.0, env={HANG_CHANGE_ENV: change_id, READY_FILE_ENV: str(ready)}
        )
        _wait_for([ready], proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=WORKER_TIMEOUT)
        assert -signal.SIGKILL == proc.returncode
        return proc

    def close(self) -> None:
        if str(self.root) in sys.path:
            sys.path.remove(str(self.root))
        for name in list(sys.modules):
            if name.split(".")[0] in self.packages:
                del sys.modules[name]

    def _counter_table(self) -> Table:
        return Table(
            self.counter,
            MetaData(),
            Column("change_id", String(255), nullable=False),
            Column("seen_started", Integer, nullable=True),
        )


def _wait_for(files: Sequence[Path], *procs: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WORKER_TIMEOUT
    while not all(f.exists() for f in files):
        for proc in procs:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"worker exited {proc.returncode} early:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"workers did not reach {files} in {WORKER_TIMEOUT}s")
        time.sleep(0.01)


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


# -- racing processes ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["audit", "other"], ids=["TX_SHARED", "TX_SEPARATE_WITH_MARKER"])
def test_racing_processes_apply_each_change_exactly_once(world: Scenario, where: str) -> None:
    """Four processes started together on a fresh store: each change runs once, all succeed.

    The store's tables do not exist yet, so the processes also race to create them.

    With the target elsewhere the audit database is free while a change runs, so on SQLite too
    only the pipeline lock keeps the other processes from running the same change.
    """
    ids = _ids(10)
    url = world.audit_url if where == "audit" else world.other_url
    stage = world.stage(*(ChangeSource(i, sleep=0.02) for i in ids))
    target = world.target(url)
    go = world.tmp_path / "go"
    ready = [world.tmp_path / f"ready-{n}" for n in range(4)]

    procs = [world.worker(stage, target, ready_file=str(r), go_file=str(go)) for r in ready]
    _wait_for(ready, *procs)
    go.touch()
    outputs = [p.communicate(timeout=WORKER_TIMEOUT) for p in procs]

    codes = [p.returncode for p in procs]
    assert [0, 0, 0, 0] == codes, outputs
    applied = Counter(i for out, _ in outputs for i in json.loads(out)["applied"])
    assert dict.fromkeys(ids, 1) == dict(applied)
    assert dict.fromkeys(ids, 1) == world.counts(url)
    assert ids == [e.change_id for e in world.history() if e.state is AuditState.APPLIED]
    assert None is world.store().lock_holder(DEFAULT_KEY)


# -- crashes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["audit", "other"], ids=["TX_SHARED", "TX_SEPARATE_WITH_MARKER"])
def test_sigkill_mid_transaction_is_applied_once_by_the_next_run(
    world: Scenario, where: str
) -> None:
    """A runner killed inside a transactional change leaves no issue: the next run applies it.

    The killed transaction rolled back (no row); the dead runner's lock expires; the new runner
    skips the change applied before the crash and applies the interrupted one exactly once.
    """
    url = world.audit_url if where == "audit" else world.other_url
    stage = world.stage(ChangeSource("change-01"), ChangeSource("change-02"))
    target = world.target(url)
    world.run_until_hang(stage, target, "change-02")
    rows_after_kill = world.counts(url)

    result = world.run(stage, target)

    assert {"change-01": 1} == rows_after_kill
    assert (["change-01"], ["change-02"]) == (result.skipped, result.applied)
    assert {"change-01": 1, "change-02": 1} == world.counts(url)
    store = world.store()
    assert ([], None) == (issues_in(store.read_latest()), store.lock_holder(DEFAULT_KEY))
    expected = ["STARTED", "APPLIED"] if where == "audit" else ["STARTED", "STARTED", "APPLIED"]
    assert expected == [e.state.value for e in world.history("change-02")]


def test_sigkill_mid_non_tx_change_becomes_an_issue(world: Scenario) -> None:
    """A runner killed inside a NON_TX change leaves STARTED: the next run stops on an issue."""
    stage = world.stage(ChangeSource("change-01"), ChangeSource("change-02", transactional=False))
    target = world.target(world.audit_url)
    world.run_until_hang(stage, target, "change-02")

    with pytest.raises(ManualInterventionRequired) as caught:
        world.run(stage, target)

    assert (["change-02"], True) == (
        [i.change_id for i in caught.value.issues],
        "change-02" in str(caught.value),
    )
    assert {"change-01": 1, "change-02": 1} == world.counts(world.audit_url)
    assert [("STARTED", "NON_TX")] == _states(world.history("change-02"))


def test_killed_after_commit_before_applied_is_recovered_by_its_marker(world: Scenario) -> None:
    """A runner dying between the commit and APPLIED leaves no issue and no second application.

    TX_SEPARATE_WITH_MARKER: the marker committed with the change, so the next run records
    APPLIED (RECOVERED) without running the change again, and clears the marker. (Under
    TX_SHARED, APPLIED is part of the transaction: dying there is dying mid-transaction.)
    """
    url = world.other_url
    stage = world.stage(ChangeSource("change-01"))
    target = world.target(url)
    dead = world.worker(stage, target, lease=1.0, die_before_applied=True)
    dead.communicate(timeout=WORKER_TIMEOUT)
    rows_after_kill = world.counts(url)
    markers_after_kill = world.markers(url)

    result = world.run(stage, target)

    assert (-signal.SIGKILL, {"change-01": 1}, 1) == (
        dead.returncode,
        rows_after_kill,
        markers_after_kill,
    )
    assert [("change-01", Outcome.RECOVERED)] == [(o.change_id, o.outcome) for o in result.outcomes]
    assert ({"change-01": 1}, 0) == (world.counts(url), world.markers(url))
    assert [] == issues_in(world.store().read_latest())
    history = world.history("change-01")
    assert (["STARTED", "APPLIED"], 1) == (
        [e.state.value for e in history],
        len({e.execution_id for e in history}),
    )
