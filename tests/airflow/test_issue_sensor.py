"""FlamingockIssueSensor: poke, reschedule and deferrable modes, and as a gate in a real DAG.

Pokes are called directly (``poke({})``) on a SQLite audit store reached through
``AIRFLOW_CONN_FLAMINGOCK_DEFAULT``; the gate DAGs are built here and run with ``dag.test()``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSkipException, TaskDeferred

from flamingock_provider.changes import Stage
from flamingock_provider.engine.errors import FlamingockError
from flamingock_provider.engine.issues import fix_issue
from flamingock_provider.engine.model import AuditState
from flamingock_provider.sensors.issues import FlamingockIssueSensor
from flamingock_provider.stores.sql import SqlAuditStore
from flamingock_provider.triggers.issues import FlamingockIssueTrigger

SECRET = "S3cretPW"
UNREACHABLE_PG = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/no_such_db_xyz"
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")


class RecordingLog:
    """Stands in for a task's logger: keeps ``(level, message)`` of every %-style call."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _record(self, level: str, message: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append((level, message % args if args else message))

    def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._record("debug", message, *args)

    def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._record("info", message, *args)

    def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._record("warning", message, *args)

    def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._record("error", message, *args)

    def at(self, level: str) -> list[str]:
        """The messages logged at ``level``."""
        return [message for lvl, message in self.lines if lvl == level]


def make_sensor(**overrides: Any) -> FlamingockIssueSensor:
    """A sensor on ``flamingock_default`` whose log is a `RecordingLog`."""
    fields: dict[str, Any] = {"task_id": "no_open_issues", "poke_interval": 0.05, "timeout": 5}
    fields.update(overrides)
    sensor = FlamingockIssueSensor(**fields)
    # Airflow 3's `log` property returns `_cached_logger` once set; stdlib caplog never sees
    # the structlog logger it would otherwise build.
    sensor._cached_logger = RecordingLog()
    return sensor


def settled(audit_db: Any, *changes: tuple[str, str]) -> None:
    """Record each ``(change_id, stage)`` as applied."""
    for change_id, stage in changes:
        audit_db.record_crash(change_id, stage, state=AuditState.APPLIED)


def resolve(url: str, change_id: str, resolution: str = "APPLIED") -> None:
    """Resolve a change's issue in the audit store at ``url``."""
    store = SqlAuditStore(url)
    try:
        fix_issue(store, change_id, resolution, author="ada")
    finally:
        store.close()


@pytest.fixture
def sql_statements() -> Iterator[list[str]]:
    """Every SQL statement any SQLAlchemy engine runs while the test runs, in order."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def queries(statements: list[str]) -> list[str]:
    """The statements that are not transaction control (BEGIN, COMMIT, PRAGMA..)."""
    return [s for s in statements if not s.lstrip().upper().startswith(TRANSACTION_CONTROL)]


# -- poke ---------------------------------------------------------------------------------


def test_poke_succeeds_with_the_checked_changes_when_no_issue_is_open(audit_db: Any) -> None:
    """No open issue: the poke is done and its XCom value is the sorted list of changes checked."""
    settled(audit_db, ("c2", "data"), ("c1", "schema"))

    result = make_sensor().poke({})

    assert (True, ["c1", "c2"]) == (result.is_done, result.xcom_value)


def test_poke_succeeds_on_a_store_that_was_never_used(audit_db: Any) -> None:
    """A store without tables holds no issue: done, nothing checked, nothing created."""
    result = make_sensor().poke({})

    assert (True, [], set()) == (result.is_done, result.xcom_value, audit_db.tables())


def test_poke_waits_and_logs_every_open_issue(audit_db: Any) -> None:
    """Each open issue is logged with change, stage, state, time, error and how to resolve it."""
    settled(audit_db, ("c1", "schema"))
    crashed = audit_db.record_crash("crashed", "schema")
    failed = audit_db.record_crash(
        "partial", "data", state=AuditState.FAILED, error_trace="Traceback\nOSError: disk full"
    )
    sensor = make_sensor()

    result = sensor.poke({})

    assert False is result.is_done
    warnings = sensor.log.at("warning")
    assert 2 == len(warnings)
    crashed_line, partial_line = sorted(warnings, key=lambda line: "partial" in line)
    expected = [
        ("'crashed'", "stage 'schema'", "STARTED", crashed.created_at.isoformat()),
        ("'partial'", "stage 'data'", "FAILED", failed.created_at.isoformat(), "OSError: disk"),
    ]
    actual = [
        tuple(part for part in parts if part in line)
        for parts, line in zip(expected, [crashed_line, partial_line], strict=True)
    ]
    assert expected == actual
    for change_id, line in (("crashed", crashed_line), ("partial", partial_line)):
        assert f"audit fix -c {change_id} -r APPLIED|ROLLED_BACK" in line
        assert f"issue get -c {change_id} --guidance" in line
        assert "flamingock_fix_issue" in line


@pytest.mark.parametrize(
    ("filters", "is_done", "checked"),
    [
        pytest.param({"stages": ["schema"]}, True, ["c1"], id="stage-without-issue"),
        pytest.param({"stages": [Stage("schema", "x.y")]}, True, ["c1"], id="stage-object"),
        pytest.param({"stages": ["data"]}, False, None, id="stage-with-issue"),
        pytest.param({"change_ids": ["c1"]}, True, ["c1"], id="change-without-issue"),
        pytest.param({"change_ids": ["c1", "crashed"]}, False, None, id="change-with-issue"),
        pytest.param({"stages": ["data"], "change_ids": ["c1"]}, True, [], id="stage-and-change"),
    ],
)
def test_poke_only_considers_the_given_stages_and_changes(
    audit_db: Any, filters: dict[str, Any], is_done: bool, checked: list[str] | None
) -> None:
    """``stages`` (names or `Stage`s) and ``change_ids`` limit which issues hold the sensor."""
    settled(audit_db, ("c1", "schema"))
    audit_db.record_crash("crashed", "data")

    result = make_sensor(**filters).poke({})

    assert (is_done, checked) == (result.is_done, result.xcom_value)


@pytest.mark.parametrize("history", [3, 40])
def test_each_poke_reads_the_store_once(
    audit_db: Any, sql_statements: list[str], history: int
) -> None:
    """One poke is one SELECT, however long the history; a poke writes nothing."""
    audit_db.record_crash("crashed", "data")
    settled(audit_db, *[(f"c{n:03d}", "schema") for n in range(history)])
    sql_statements.clear()

    make_sensor().poke({})
    first = queries(sql_statements)
    make_sensor().poke({})

    assert 1 == len(first), first
    assert 2 == len(queries(sql_statements))
    assert first[0].lstrip().upper().startswith(("SELECT", "WITH")), first[0]


def test_unreachable_store_fails_the_poke_without_the_password(
    sql_connection: Callable[..., None],
) -> None:
    """A store that cannot be read fails the task (from a FlamingockError); no password shown."""
    sql_connection("flamingock_default", UNREACHABLE_PG)

    with pytest.raises(AirflowException) as raised:
        make_sensor().poke({})

    assert isinstance(raised.value.__cause__, FlamingockError)
    assert "no_such_db_xyz" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_missing_connection_fails_the_poke_naming_it() -> None:
    """An undefined audit connection fails the task with a message naming it."""
    with pytest.raises(AirflowException, match="no_such_audit_conn"):
        make_sensor(audit_conn_id="no_such_audit_conn").poke({})


def test_constructor_does_no_io_and_templates_its_ids() -> None:
    """Building the sensor needs no connection; its connection, stages and changes are templated."""
    sensor = make_sensor(audit_conn_id="not_defined_anywhere", stages=[Stage("s", "pkg")])

    assert ("not_defined_anywhere", ["s"], None) == (
        sensor.audit_conn_id,
        sensor.stages,
        sensor.change_ids,
    )
    assert {"audit_conn_id", "stages", "change_ids"} <= set(sensor.template_fields)


def test_sensor_waits_in_poke_mode_until_the_issue_is_fixed(audit_db: Any) -> None:
    """``execute()`` in poke mode returns the checked ids once a fix lands during its wait."""
    audit_db.record_crash("crashed", "data")
    sensor = make_sensor(mode="poke", timeout=10)
    fixer = threading.Timer(0.5, resolve, args=(audit_db.url, "crashed"))
    fixer.start()
    try:
        checked = sensor.execute({})
    finally:
        fixer.cancel()

    assert ["crashed"] == checked
    assert sensor.log.at("warning"), "the sensor never saw the issue open"


@pytest.mark.parametrize(
    ("soft_fail", "raised"),
    [(False, "AirflowSensorTimeout"), (True, "AirflowSkipException")],
)
def test_sensor_times_out_while_an_issue_stays_open(
    audit_db: Any, soft_fail: bool, raised: str
) -> None:
    """An issue that stays open times the sensor out; with ``soft_fail`` the task is skipped."""
    audit_db.record_crash("crashed", "data")
    sensor = make_sensor(timeout=0.3, soft_fail=soft_fail)

    with pytest.raises(Exception) as caught:
        sensor.execute({})

    assert raised == type(caught.value).__name__


# -- deferrable ---------------------------------------------------------------------------


def test_deferrable_sensor_without_issues_succeeds_without_deferring(audit_db: Any) -> None:
    """When nothing is open at the first check, the task succeeds at once: no trigger needed."""
    settled(audit_db, ("c1", "schema"))

    assert ["c1"] == make_sensor(deferrable=True).execute({})


def test_deferrable_sensor_defers_to_the_issue_trigger(audit_db: Any) -> None:
    """With an open issue, ``execute()`` defers to a FlamingockIssueTrigger with its settings."""
    audit_db.record_crash("crashed", "data")
    sensor = make_sensor(
        deferrable=True,
        stages=[Stage("data", "pkg")],
        change_ids=["crashed"],
        poke_interval=2,
        timeout=600,
    )

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})

    trigger = deferred.value.trigger
    assert isinstance(trigger, FlamingockIssueTrigger)
    expected_kwargs = {
        "audit_conn_id": "flamingock_default",
        "stages": ["data"],
        "change_ids": ["crashed"],
        "poll_interval": 2.0,
    }
    assert expected_kwargs == json.loads(json.dumps(trigger.serialize()[1]))
    assert ("execute_complete", timedelta(seconds=600)) == (
        deferred.value.method_name,
        deferred.value.timeout,
    )


def test_deferred_sensor_completes_with_the_triggers_checked_ids() -> None:
    """Resumed with the trigger's success event, the task returns the checked ids (its XCom)."""
    event = {"status": "success", "checked": ["c1", "c2"]}

    assert ["c1", "c2"] == make_sensor(deferrable=True).execute_complete({}, event)


@pytest.mark.parametrize(
    ("soft_fail", "next_method", "next_kwargs", "raised"),
    [
        pytest.param(
            False,
            "execute_complete",
            {"event": {"status": "error", "message": "store gone"}},
            AirflowException,
            id="error-event",
        ),
        pytest.param(
            True,
            "execute_complete",
            {"event": {"status": "error", "message": "store gone"}},
            AirflowSkipException,
            id="error-event-soft-fail",
        ),
        pytest.param(
            False,
            "__fail__",
            {"error": "Trigger/execution timeout"},
            AirflowException,
            id="timeout",
        ),
        pytest.param(
            True,
            "__fail__",
            {"error": "Trigger/execution timeout"},
            AirflowSkipException,
            id="timeout-soft-fail",
        ),
    ],
)
def test_deferred_sensor_fails_or_skips_like_any_sensor(
    soft_fail: bool, next_method: str, next_kwargs: dict[str, Any], raised: type[Exception]
) -> None:
    """A trigger error or a deferral timeout fails the task, or skips it with ``soft_fail``."""
    sensor = make_sensor(deferrable=True, soft_fail=soft_fail)

    with pytest.raises(raised) as caught:
        sensor.resume_execution(next_method, next_kwargs, {})

    if next_method == "execute_complete" and not soft_fail:
        assert "store gone" in str(caught.value)


# -- as a gate in a DAG -------------------------------------------------------------------


def gate_dag(register_dag: Callable[[Any], Any], **sensor_options: Any) -> Any:
    """A DAG where the issue sensor gates ``downstream``; registered for ``dag.test()``."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    options: dict[str, Any] = {"poke_interval": 0.1, "timeout": 1, "mode": "poke"}
    options.update(sensor_options)
    with DAG(
        dag_id="flamingock_issue_gate",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
    ) as dag:
        FlamingockIssueSensor(task_id="no_open_issues", **options) >> EmptyOperator(
            task_id="downstream"
        )
    return register_dag(dag)


def task_states(dag_run: Any) -> dict[str, str]:
    """``{task_id: state}`` of a finished run, plus the run's own state under ``"run"``."""
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return {"run": str(dag_run.state), **states}


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_gate_lets_downstream_run_when_no_issue_is_open(
    audit_db: Any, register_dag: Callable[[Any], Any], mode: str
) -> None:
    """No open issue: the sensor succeeds, pushes the checked ids, and the downstream task runs."""
    settled(audit_db, ("c1", "schema"), ("c2", "data"))
    options = {"deferrable": True} if mode == "deferrable" else {"mode": mode}
    dag = gate_dag(register_dag, **options)

    dag_run = dag.test()

    expected = {"run": "success", "no_open_issues": "success", "downstream": "success"}
    assert expected == task_states(dag_run)
    sensor_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "no_open_issues")
    assert ["c1", "c2"] == sensor_ti.xcom_pull(task_ids="no_open_issues")


@pytest.mark.parametrize(
    ("options", "sensor_state", "downstream_state", "run_state"),
    [
        pytest.param({"mode": "poke"}, "failed", "upstream_failed", "failed", id="poke"),
        pytest.param(
            {"mode": "reschedule"}, "failed", "upstream_failed", "failed", id="reschedule"
        ),
        pytest.param(
            {"mode": "poke", "soft_fail": True}, "skipped", "skipped", "success", id="soft-fail"
        ),
    ],
)
def test_gate_holds_downstream_while_an_issue_is_open(
    audit_db: Any,
    register_dag: Callable[[Any], Any],
    options: dict[str, Any],
    sensor_state: str,
    downstream_state: str,
    run_state: str,
) -> None:
    """An open issue times the sensor out (or skips it): the downstream task never runs."""
    audit_db.record_crash("crashed", "data")
    dag = gate_dag(register_dag, **options)

    dag_run = dag.test()

    expected = {"run": run_state, "no_open_issues": sensor_state, "downstream": downstream_state}
    assert expected == task_states(dag_run)


def test_deferred_gate_resumes_when_the_issue_is_fixed(
    audit_db: Any, register_dag: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deferrable: the sensor defers, its trigger fires once the fix lands, downstream runs.

    ``dag.test()`` runs the trigger inline; the fix lands 0.3 s after the trigger started.
    """
    fired: list[dict[str, Any]] = []
    real_run = FlamingockIssueTrigger.run

    async def run_then_fix(self: FlamingockIssueTrigger) -> Any:
        fixer = threading.Timer(0.3, resolve, args=(audit_db.url, "crashed"))
        fixer.start()
        try:
            async for event in real_run(self):
                fired.append(event.payload)
                yield event
        finally:
            fixer.cancel()

    monkeypatch.setattr(FlamingockIssueTrigger, "run", run_then_fix)
    audit_db.record_crash("crashed", "data")
    dag = gate_dag(register_dag, deferrable=True, timeout=60)

    dag_run = dag.test()

    expected = {"run": "success", "no_open_issues": "success", "downstream": "success"}
    assert expected == task_states(dag_run)
    assert [{"status": "success", "checked": ["crashed"]}] == fired
    sensor_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "no_open_issues")
    assert ["crashed"] == sensor_ti.xcom_pull(task_ids="no_open_issues")
