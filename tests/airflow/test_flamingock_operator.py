"""FlamingockOperator called directly, ``execute(context={})``, as a unit test would call it.

No DAG run and no metadata database: the audit store and the target are SQLite files reached
through ``AIRFLOW_CONN_*`` variables; change packages are generated per test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from flamingock_provider.changes import Recovery, Stage
from flamingock_provider.engine.errors import (
    ChangeFailedError,
    FlamingockError,
    LockError,
    ManualInterventionRequired,
    ValidationError,
)
from flamingock_provider.operators.flamingock import FlamingockOperator
from flamingock_provider.targets import HookTargetSystem, SqlTargetSystem

SECRET = "S3cretPW"
UNREACHABLE_DB = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/db_that_does_not_exist_xyz"
CREATE_ITEMS = "connection.execute(text('CREATE TABLE items (id INTEGER)'))"
INSERT_ITEM = "connection.execute(text('INSERT INTO items VALUES (1)'))"


@pytest.fixture
def make_operator(audit_db: Any, shop_db: Any) -> Callable[..., FlamingockOperator]:
    """An operator on the test's audit store whose one target system is the shop database."""

    def make(stages: Sequence[Stage], **overrides: Any) -> FlamingockOperator:
        fields: dict[str, Any] = {
            "task_id": "apply_changes",
            "stages": stages,
            "target_systems": [SqlTargetSystem("shop-db", conn_id="flamingock_demo_shop")],
        }
        fields.update(overrides)
        return FlamingockOperator(**fields)

    return make


@pytest.fixture
def two_stages(packages: Any) -> list[Stage]:
    """Stage ``schema`` (create-items) then stage ``data`` (insert-item, then a NON_TX one)."""
    return [
        packages.stage("schema", [{"id": "create-items", "body": CREATE_ITEMS}]),
        packages.stage(
            "data",
            [
                {"id": "insert-item", "body": INSERT_ITEM},
                {"id": "non-tx-note", "transactional": False},
            ],
        ),
    ]


def failure_of(operator: FlamingockOperator) -> AirflowException:
    """Run the operator, expecting the task to fail; return the Airflow exception."""
    with pytest.raises(AirflowException) as raised:
        operator.execute(context={})
    return raised.value


# -- the summary --------------------------------------------------------------------------


def test_execute_without_a_dag_run_returns_a_json_summary(
    make_operator: Callable[..., FlamingockOperator], two_stages: list[Stage]
) -> None:
    """``execute(context={})`` runs every change and returns a JSON-serialisable summary."""
    summary = make_operator(two_stages).execute(context={})

    assert summary == json.loads(json.dumps(summary))
    assert {"execution_id", "applied", "skipped", "failed", "stages"} <= set(summary)
    expected = {
        "applied": ["create-items", "insert-item", "non-tx-note"],
        "skipped": [],
        "failed": [],
        "stages": {"schema": "COMPLETED", "data": "COMPLETED"},
    }
    actual = {
        "applied": summary["applied"],
        "skipped": summary["skipped"],
        "failed": summary["failed"],
        "stages": {name: stage["status"] for name, stage in summary["stages"].items()},
    }
    assert expected == actual


def test_execute_twice_skips_what_was_applied(
    make_operator: Callable[..., FlamingockOperator], two_stages: list[Stage]
) -> None:
    """A second execution skips every change under a new execution id."""
    first = make_operator(two_stages).execute(context={})
    second = make_operator(two_stages).execute(context={})

    assert (first["applied"], []) == (second["skipped"], second["applied"])
    assert first["execution_id"] != second["execution_id"]


def test_execute_records_the_changes_in_the_audit_store(
    make_operator: Callable[..., FlamingockOperator],
    two_stages: list[Stage],
    audit_db: Any,
    shop_db: Any,
) -> None:
    """Each change is audited STARTED then APPLIED, and its effect is in the target."""
    make_operator(two_stages).execute(context={})

    expected = {c: ["STARTED", "APPLIED"] for c in ("create-items", "insert-item", "non-tx-note")}
    assert expected == audit_db.states()
    assert [(1,)] == shop_db.query("SELECT id FROM items")


# -- dry run ------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_lists_pending_changes(
    make_operator: Callable[..., FlamingockOperator],
    two_stages: list[Stage],
    audit_db: Any,
    shop_db: Any,
) -> None:
    """``dry_run=True`` lists every change as pending and creates no table anywhere."""
    summary = make_operator(two_stages, dry_run=True).execute(context={})

    expected = (["create-items", "insert-item", "non-tx-note"], [], True)
    assert expected == (summary["pending"], summary["applied"], summary["dry_run"])
    assert (set(), set()) == (audit_db.tables(), shop_db.tables())


def test_dry_run_after_a_partial_run_lists_only_what_is_left(
    make_operator: Callable[..., FlamingockOperator],
    two_stages: list[Stage],
    audit_db: Any,
) -> None:
    """After the first stage ran, a dry run skips it and lists the second stage as pending."""
    make_operator(two_stages[:1]).execute(context={})
    entries = audit_db.history()

    summary = make_operator(two_stages, dry_run=True).execute(context={})

    expected = (["create-items"], ["insert-item", "non-tx-note"])
    assert expected == (summary["skipped"], summary["pending"])
    assert entries == audit_db.history()


# -- failures -----------------------------------------------------------------------------


def test_failing_change_fails_the_task_naming_the_change(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any
) -> None:
    """A change that raises: AirflowException from a FlamingockError naming the change."""
    stage = packages.stage(
        "s1",
        [
            {"id": "fine-change"},
            {"id": "broken-change", "body": "raise RuntimeError('kaput')"},
            {"id": "never-reached"},
        ],
    )

    error = failure_of(make_operator([stage]))

    assert isinstance(error.__cause__, FlamingockError)
    assert isinstance(error.__cause__, ChangeFailedError)
    assert ("broken-change", "s1") == (error.__cause__.change_id, error.__cause__.stage)
    assert "broken-change" in str(error)
    assert "kaput" in str(error)
    expected = {"fine-change": ["STARTED", "APPLIED"], "broken-change": ["STARTED", "FAILED"]}
    assert expected == audit_db.states()


@pytest.mark.parametrize("ending", ["failed-change", "blocked-stage"])
def test_failed_task_leaves_the_lock_free(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any, ending: str
) -> None:
    """However the task fails, the lock is released and its heartbeat stopped.

    So a retry of the task starts at once instead of waiting for the lease to run out.
    """
    body = "raise RuntimeError('kaput')" if ending == "failed-change" else "pass"
    stage = packages.stage("s1", ["ok", {"id": "last", "body": body, "transactional": False}])
    if ending == "blocked-stage":
        audit_db.record_crash("last", "s1")

    failure_of(make_operator([stage]))

    assert [] == audit_db.query('SELECT "key", owner FROM "flamingockLock"')
    assert [] == [t.name for t in threading.enumerate() if t.name.startswith("flamingock-lock")]


def test_blocked_stage_fails_the_task_naming_the_change_and_the_fix(
    make_operator: Callable[..., FlamingockOperator], two_stages: list[Stage], audit_db: Any
) -> None:
    """After a NON_TX change crashed (a lone STARTED), its stage is blocked and nothing runs.

    The message names the change and how to resolve it (``audit fix``).
    """
    audit_db.record_crash("non-tx-note", "data")

    error = failure_of(make_operator(two_stages))

    assert isinstance(error.__cause__, ManualInterventionRequired)
    assert ["non-tx-note"] == [issue.change_id for issue in error.__cause__.issues]
    assert "non-tx-note" in str(error)
    assert "audit fix" in str(error)
    expected = {
        "create-items": ["STARTED", "APPLIED"],
        "non-tx-note": ["STARTED"],
    }
    assert expected == audit_db.states()


def test_crashed_change_with_always_retry_is_applied_again(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any
) -> None:
    """A lone STARTED written with ALWAYS_RETRY is no issue: the change simply runs again."""
    stage = packages.stage("s1", [{"id": "retryable", "transactional": False}])
    audit_db.record_crash("retryable", "s1", recovery_strategy=Recovery.ALWAYS_RETRY)

    summary = make_operator([stage]).execute(context={})

    assert ["retryable"] == summary["applied"]
    assert {"retryable": ["STARTED", "STARTED", "APPLIED"]} == audit_db.states()


def test_missing_audit_connection_fails_the_task_naming_it(packages: Any, shop_db: Any) -> None:
    """No ``flamingock_default`` connection: the task fails naming it, with a ValidationError."""
    stage = packages.stage("s1", ["c1"])
    operator = FlamingockOperator(
        task_id="apply",
        stages=[stage],
        target_systems=[SqlTargetSystem("shop-db", url=shop_db.url)],
    )

    error = failure_of(operator)

    assert isinstance(error.__cause__, ValidationError)
    assert "flamingock_default" in str(error)


def test_unreachable_audit_store_fails_without_revealing_the_password(
    make_operator: Callable[..., FlamingockOperator],
    packages: Any,
    sql_connection: Callable[..., None],
) -> None:
    """An audit store that cannot be reached fails the task; the password is nowhere in it."""
    sql_connection("flamingock_default", UNREACHABLE_DB)

    error = failure_of(make_operator([packages.stage("s1", ["c1"])]))

    assert isinstance(error.__cause__, FlamingockError)
    messages = []
    cause: BaseException | None = error
    while cause is not None:
        messages.append(str(cause))
        cause = cause.__cause__
    assert [] == [m for m in messages if SECRET in m]


def test_lock_held_by_another_run_fails_the_task_naming_the_holder(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any
) -> None:
    """While another run holds the lock past ``lock_wait``, the task fails naming that run."""
    audit_db.hold_lock("DEFAULT_KEY", "other-run@elsewhere#1")
    operator = make_operator([packages.stage("s1", ["c1"])], lock_wait=0.3, lock_retry=0.1)

    error = failure_of(operator)

    assert isinstance(error.__cause__, LockError)
    assert "other-run@elsewhere#1" in str(error)
    assert {} == audit_db.states()


def test_lock_key_separates_pipelines(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any
) -> None:
    """A pipeline with its own ``lock_key`` runs while another key is held."""
    audit_db.hold_lock("DEFAULT_KEY", "other-run@elsewhere#1")
    operator = make_operator([packages.stage("s1", ["c1"])], lock_key="orders", lock_wait=0.3)

    summary = operator.execute(context={})

    assert (["c1"], True) == (summary["applied"], summary["lock_taken"])


# -- target systems -----------------------------------------------------------------------


def test_hook_target_system_hands_the_connection_hook_to_the_change(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any
) -> None:
    """``HookTargetSystem(conn_id=..)`` injects that connection's hook; the change is NON_TX."""
    body = "assert type(hook).__name__ == 'FlamingockSqlHook', hook"
    stage = packages.stage("s1", [{"id": "uses-hook", "body": body, "params": "hook"}])
    target = HookTargetSystem("shop-hook", conn_id="flamingock_demo_shop")

    summary = make_operator([stage], target_systems=[target]).execute(context={})

    assert ["uses-hook"] == summary["applied"]
    assert ["NON_TX", "NON_TX"] == [e.tx_strategy.value for e in audit_db.history()]


def test_change_receives_the_airflow_context(
    make_operator: Callable[..., FlamingockOperator], packages: Any
) -> None:
    """A change asking for ``context`` gets the one passed to ``execute``."""
    body = "assert context == {'marker': 42}, context"
    stage = packages.stage("s1", [{"id": "reads-context", "body": body, "params": "context"}])

    summary = make_operator([stage]).execute(context={"marker": 42})

    assert ["reads-context"] == summary["applied"]


def test_target_on_the_audit_database_shares_its_transaction(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any
) -> None:
    """A target on the audit store's own connection runs TX_SHARED, its table beside the log."""
    stage = packages.stage("s1", [{"id": "create-items", "body": CREATE_ITEMS}])
    target = SqlTargetSystem("audit-db", conn_id="flamingock_default")

    make_operator([stage], target_systems=[target]).execute(context={})

    assert {"TX_SHARED"} == {e.tx_strategy.value for e in audit_db.history()}
    assert "items" in audit_db.tables()


def test_missing_target_connection_fails_naming_it(
    make_operator: Callable[..., FlamingockOperator], packages: Any
) -> None:
    """A target system whose connection is not defined fails the task naming that connection."""
    target = SqlTargetSystem("elsewhere", conn_id="no_such_target_conn")

    with pytest.raises(Exception, match="no_such_target_conn"):
        make_operator([packages.stage("s1", ["c1"])], target_systems=[target]).execute(context={})


@pytest.mark.parametrize("conn_type", ["generic", "http"])
def test_target_connection_without_sqlalchemy_url_is_a_validation_error(
    make_operator: Callable[..., FlamingockOperator],
    packages: Any,
    define_connection: Callable[..., None],
    conn_type: str,
) -> None:
    """A target connection that offers no SQLAlchemy URL: a ValidationError naming it."""
    define_connection("not_sql", conn_type=conn_type, host="example.com")
    target = SqlTargetSystem("elsewhere", conn_id="not_sql")
    operator = make_operator([packages.stage("s1", ["c1"])], target_systems=[target])

    error = failure_of(operator)

    assert isinstance(error.__cause__, ValidationError)
    assert "not_sql" in str(error)


# -- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("lock_lease", 0),
        ("lock_lease", "abc"),
        ("lock_lease", -5),
        ("lock_wait", timedelta(0)),
        ("lock_retry", True),
        ("lock_wait", None),
    ],
)
def test_bad_lock_durations_are_rejected_naming_the_parameter(parameter: str, value: Any) -> None:
    """A lock duration that is not a positive timedelta or number: ValidationError naming it."""
    with pytest.raises(ValidationError, match=parameter):
        FlamingockOperator(task_id="apply", stages=[Stage("s1", "pkg")], **{parameter: value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(30, timedelta(seconds=30)), (0.5, timedelta(milliseconds=500)), (timedelta(2), timedelta(2))],
)
def test_lock_durations_accept_seconds_and_timedeltas(value: Any, expected: timedelta) -> None:
    """Seconds (int or float) and timedeltas are all accepted as lock durations."""
    operator = FlamingockOperator(
        task_id="apply", stages=[Stage("s1", "pkg")], lock_lease=value, lock_wait=value
    )

    assert (expected, expected) == (operator.lock_lease, operator.lock_wait)


def test_duplicate_target_ids_are_rejected_when_the_dag_is_parsed(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any, shop_db: Any
) -> None:
    """Two target systems with one id: ValidationError naming it at construction (DAG parse)."""
    targets = [SqlTargetSystem("twin", url=shop_db.url), SqlTargetSystem("twin", url=shop_db.url)]
    stage = packages.stage("s1", ["c1"])

    with pytest.raises(ValidationError, match="twin"):
        make_operator([stage], target_systems=targets)
    assert set() == audit_db.tables()


def test_invalid_change_unit_is_rejected_before_anything_is_written(
    make_operator: Callable[..., FlamingockOperator], packages: Any, audit_db: Any
) -> None:
    """A change asking for a parameter no target offers: ValidationError, nothing written."""
    stage = packages.stage("s1", [{"id": "wants-magic", "params": "magic"}])

    error = failure_of(make_operator([stage]))

    assert isinstance(error.__cause__, ValidationError)
    assert ("wants-magic" in str(error), "magic" in str(error)) == (True, True)
    assert set() == audit_db.tables()


def test_operator_declares_its_templated_fields() -> None:
    """The audit connection id and the lock key may be Jinja templates."""
    assert {"audit_conn_id", "lock_key"} <= set(FlamingockOperator.template_fields)
