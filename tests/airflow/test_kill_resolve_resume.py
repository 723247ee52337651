"""The kill-resolve-resume story, end to end on SQLite.

A worker process runs ``FlamingockOperator.execute({})``; its non-transactional change
``load-note`` writes a row, signals through a ready-file, then sleeps, and the test kills the
worker with SIGKILL. What follows is what an operator of the pipeline lives through:

1. the history holds a lone ``STARTED``: ``issue list`` exits 1 and names it;
2. the issue sensor does not succeed: a poke is not done, and the deferrable sensor defers to
   a trigger that fires only once the issue is fixed (checked with a real event loop);
3. the next run fails naming the issue and runs nothing of the stage;
4. a person resolves it, with ``flamingock-airflow audit fix`` or the ``flamingock_fix_issue``
   DAG: APPLIED (the row is there) or ROLLED_BACK (after deleting the partial row);
5. the sensor succeeds with the checked change ids, and the next run applies the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from flamingock_provider.changes import Recovery, Stage
from flamingock_provider.engine.errors import ManualInterventionRequired
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.sensors.issues import FlamingockIssueSensor
from flamingock_provider.targets import SqlTargetSystem
from flamingock_provider.triggers.issues import FlamingockIssueTrigger

READY_ENV = "FLAMINGOCK_TEST_READY_FILE"
CREATE_ITEMS = "connection.execute(text('CREATE TABLE items (id INTEGER)'))"
INSERT_ITEM = "connection.execute(text('INSERT INTO items VALUES (1)'))"
# Writes its row (autocommit: NON_TX), then, in the worker only, signals and hangs.
LOAD_NOTE = (
    "import os, pathlib, time; "
    "connection.execute(text('INSERT INTO items VALUES (2)')); "
    f"ready = os.environ.get('{READY_ENV}'); "
    "(pathlib.Path(ready).write_text('applying'), time.sleep(120)) if ready else None"
)
CHECKED = ["create-items", "insert-item", "load-note"]

WORKER = """\
import json, sys
root, stages = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, root)
from flamingock_provider.changes import Stage
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.targets import SqlTargetSystem
FlamingockOperator(
    task_id="apply_changes",
    stages=[Stage(name, package) for name, package in stages],
    target_systems=[SqlTargetSystem("shop-db", conn_id="flamingock_demo_shop")],
    lock_lease=1.0,
).execute({})
"""


@dataclass
class Pipeline:
    """The story's two stages, their databases, and ways to run and kill them."""

    stages: list[Stage]
    packages_root: Path
    audit_db: Any
    shop_db: Any
    tmp_path: Path

    def operator(self) -> FlamingockOperator:
        """The operator a DAG would run, on the same stages and target."""
        return FlamingockOperator(
            task_id="apply_changes",
            stages=self.stages,
            target_systems=[SqlTargetSystem("shop-db", conn_id="flamingock_demo_shop")],
            lock_retry=0.1,
        )

    def kill_mid_apply(self) -> None:
        """Start a worker, wait until ``load-note`` is applying, then SIGKILL the worker."""
        ready = self.tmp_path / "load-note.ready"
        log = self.tmp_path / "worker.log"
        stages = json.dumps([[s.name, s.package] for s in self.stages])
        with log.open("w") as output:
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(self.packages_root), stages],
                env={**os.environ, READY_ENV: str(ready)},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if worker.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"worker never reached load-note:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
        assert -signal.SIGKILL == worker.returncode

    def items(self) -> list[int]:
        """The ids in the shop's ``items`` table."""
        return [row[0] for row in self.shop_db.query("SELECT id FROM items ORDER BY id")]


@pytest.fixture
def pipeline(packages: Any, audit_db: Any, shop_db: Any, tmp_path: Path) -> Callable[..., Pipeline]:
    """Build the story's pipeline; ``recovery`` is the killed change's recovery strategy."""

    def build(recovery: Recovery = Recovery.MANUAL_INTERVENTION) -> Pipeline:
        schema = packages.stage("schema", [{"id": "create-items", "body": CREATE_ITEMS}])
        note = {"id": "load-note", "body": LOAD_NOTE, "transactional": False, "recovery": recovery}
        data = packages.stage("data", [note, {"id": "insert-item", "body": INSERT_ITEM}])
        return Pipeline([schema, data], packages.root, audit_db, shop_db, tmp_path)

    return build


def deferred_trigger(sensor: FlamingockIssueSensor) -> FlamingockIssueTrigger:
    """Execute a deferrable sensor, expecting it to defer; return its trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, FlamingockIssueTrigger)
    return trigger


def sensor(**options: Any) -> FlamingockIssueSensor:
    """The gate a downstream DAG would use on ``flamingock_default``."""
    return FlamingockIssueSensor(task_id="no_open_issues", poke_interval=0.05, **options)


@pytest.mark.parametrize(
    ("via", "resolution"),
    [("cli", "APPLIED"), ("dag", "APPLIED"), ("cli", "ROLLED_BACK"), ("dag", "ROLLED_BACK")],
)
def test_kill_resolve_resume(
    pipeline: Callable[..., Pipeline],
    cli: Callable[..., Any],
    fix_issue_dag: Any,
    watch_trigger: Callable[..., Any],
    via: str,
    resolution: str,
) -> None:
    """A change killed mid-apply blocks its stage until a person resolves it; then all goes on."""
    story = pipeline()

    # 1. Killed mid-apply: a lone STARTED, and the partial effect the change had made.
    story.kill_mid_apply()
    expected_states = {"create-items": ["STARTED", "APPLIED"], "load-note": ["STARTED"]}
    assert expected_states == story.audit_db.states()
    assert [2] == story.items()
    listing = cli("issue", "list")
    assert 1 == listing.code
    assert ["load-note", "data", "STARTED"] == listing.out.splitlines()[2].split()[:3]

    # 2. The sensor holds.
    assert False is sensor().poke({}).is_done
    trigger = deferred_trigger(sensor(deferrable=True))

    # 3. The next run fails naming the issue; nothing of stage "data" runs.
    with pytest.raises(AirflowException) as blocked:
        story.operator().execute({})
    assert isinstance(blocked.value.__cause__, ManualInterventionRequired)
    assert ("load-note" in str(blocked.value), "audit fix" in str(blocked.value)) == (True, True)
    assert expected_states == story.audit_db.states()
    assert [2] == story.items()

    # 4. A person resolves it while the deferred sensor's trigger is polling.
    def resolve() -> None:
        if resolution == "ROLLED_BACK":
            story.shop_db.execute("DELETE FROM items WHERE id = 2")  # undo the partial effect
        if via == "cli":
            assert 0 == cli("audit", "fix", "-c", "load-note", "-r", resolution).code
        else:
            dag_run = fix_issue_dag.test(
                run_conf={"change_id": "load-note", "resolution": resolution}
            )
            assert "success" == str(dag_run.state)

    watched = watch_trigger(trigger, resolve=resolve, settle=0.3)

    assert [] == watched.before
    assert {"status": "success", "checked": ["create-items", "load-note"]} == watched.event.payload
    fix = story.audit_db.history()[-1]
    expected_author = "flamingock-cli" if via == "cli" else "dag_test"
    assert (f"MANUAL_MARKED_AS_{resolution}", expected_author) == (fix.state.value, fix.author)

    # 5. The sensor succeeds; the next run applies the rest (and, ROLLED_BACK, the change again).
    done = sensor().poke({})
    assert (True, ["create-items", "load-note"]) == (done.is_done, done.xcom_value)
    assert 0 == cli("issue", "list").code

    summary = story.operator().execute({})

    again = ["load-note"] if resolution == "ROLLED_BACK" else []
    assert ([*again, "insert-item"], []) == (summary["applied"], summary["failed"])
    assert [1, 2] == story.items()
    note_history = {
        "APPLIED": ["STARTED", "MANUAL_MARKED_AS_APPLIED"],
        "ROLLED_BACK": ["STARTED", "MANUAL_MARKED_AS_ROLLED_BACK", "STARTED", "APPLIED"],
    }[resolution]
    assert note_history == story.audit_db.states()["load-note"]
    assert CHECKED == sensor().poke({}).xcom_value


def test_killed_always_retry_change_is_no_issue(
    pipeline: Callable[..., Pipeline], cli: Callable[..., Any]
) -> None:
    """An ALWAYS_RETRY change killed mid-apply is no issue: nothing holds, the next run re-applies.

    Its partial row stays (ALWAYS_RETRY says the change is safe to run again), so it is there
    twice: that is the contract the change's author chose.
    """
    story = pipeline(recovery=Recovery.ALWAYS_RETRY)
    story.kill_mid_apply()

    assert ["STARTED"] == story.audit_db.states()["load-note"]
    listing = cli("issue", "list")
    assert (0, "No open issues.\n") == (listing.code, listing.out)
    done = sensor().poke({})
    assert (True, ["create-items", "load-note"]) == (done.is_done, done.xcom_value)

    summary = story.operator().execute({})

    assert ["load-note", "insert-item"] == summary["applied"]
    assert ["STARTED", "STARTED", "APPLIED"] == story.audit_db.states()["load-note"]
    assert [1, 2, 2] == story.items()
