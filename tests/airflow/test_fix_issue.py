"""Resolving an issue from Airflow: FlamingockFixIssueOperator and the flamingock_fix_issue DAG.

The operator is called directly with hand-made contexts; the DAG from ``dags/`` runs under
``dag.test(run_conf=...)``, whose runs are triggered by the user ``dag_test``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import AuditState
from flamingock_provider.operators.fix import FlamingockFixIssueOperator

DAG_TEST_USER = "dag_test"


def make_fix(**overrides: Any) -> FlamingockFixIssueOperator:
    """A fix operator resolving ``crashed`` as APPLIED on ``flamingock_default``."""
    fields: dict[str, Any] = {
        "task_id": "fix_issue",
        "change_id": "crashed",
        "resolution": "APPLIED",
    }
    fields.update(overrides)
    return FlamingockFixIssueOperator(**fields)


def triggered_by(user: str | None) -> dict[str, Any]:
    """A context whose DAG run was triggered by ``user`` (None: Airflow knows no user)."""
    return {"dag_run": SimpleNamespace(triggering_user_name=user)}


@pytest.fixture
def crashed(audit_db: Any) -> Any:
    """An audit store where ``crashed`` (stage ``data``) has an open STARTED issue."""
    audit_db.record_crash("healthy", "data", state=AuditState.APPLIED)
    audit_db.record_crash("crashed", "data")
    return audit_db


# -- the operator -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "state"),
    [("APPLIED", "MANUAL_MARKED_AS_APPLIED"), ("rolled_back", "MANUAL_MARKED_AS_ROLLED_BACK")],
)
def test_operator_appends_the_manual_entry_and_returns_it(
    crashed: Any, resolution: str, state: str
) -> None:
    """The manual entry is appended and returned (XCom) in Flamingock's JSON form."""
    returned = make_fix(resolution=resolution).execute(triggered_by("alice"))

    written = crashed.history()[-1]
    assert ("crashed", state, "alice") == (written.change_id, written.state.value, written.author)
    assert written.as_json() == returned
    assert "MANUAL" in crashed.states()["crashed"][-1]


@pytest.mark.parametrize(
    ("author", "context", "expected"),
    [
        pytest.param(None, triggered_by("alice"), "alice", id="triggering-user"),
        pytest.param("bob", triggered_by("alice"), "bob", id="explicit-author-wins"),
        pytest.param(None, triggered_by(None), "airflow", id="run-without-user"),
        pytest.param(None, {}, "airflow", id="no-dag-run"),
    ],
)
def test_operator_records_who_resolved_the_issue(
    crashed: Any, author: str | None, context: dict[str, Any], expected: str
) -> None:
    """Author: ``author=`` if given, else the user who triggered the run, else ``airflow``."""
    make_fix(author=author).execute(context)

    assert expected == crashed.history()[-1].author


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"change_id": "no-such-change"}, "Unknown change id", id="unknown"),
        pytest.param({"change_id": "healthy"}, "has no issue", id="no-issue"),
        pytest.param({"change_id": "  "}, "change_id is required", id="blank-change-id"),
        pytest.param({"resolution": "DONE"}, "Invalid resolution 'DONE'", id="resolution"),
    ],
)
def test_operator_with_bad_input_fails_and_writes_nothing(
    crashed: Any, overrides: dict[str, Any], message: str
) -> None:
    """Bad input fails the task (from a ValidationError) with a clear message; nothing written."""
    before = crashed.history()

    with pytest.raises(AirflowException, match=message) as raised:
        make_fix(**overrides).execute({})

    assert isinstance(raised.value.__cause__, ValidationError)
    assert before == crashed.history()


def test_operator_on_a_missing_connection_fails_naming_it() -> None:
    """An undefined audit connection fails the task naming it."""
    with pytest.raises(AirflowException, match="no_such_audit_conn"):
        make_fix(audit_conn_id="no_such_audit_conn").execute({})


def test_operator_strips_the_change_id(crashed: Any) -> None:
    """A change id pasted with spaces around it still names the change."""
    make_fix(change_id="  crashed\n").execute({})

    assert "MANUAL_MARKED_AS_APPLIED" == crashed.states()["crashed"][-1]


def test_operator_templates_every_setting() -> None:
    """Connection, change, resolution and author may come from params (Jinja)."""
    expected = {"audit_conn_id", "change_id", "resolution", "author"}
    assert expected == set(FlamingockFixIssueOperator.template_fields)


# -- the DAG ------------------------------------------------------------------------------


def test_fix_dag_is_manual_with_the_three_params(fix_issue_dag: Any) -> None:
    """The DAG runs only when triggered and asks for connection, change id and resolution."""
    params = fix_issue_dag.params
    assert False is fix_issue_dag.timetable.can_be_scheduled
    assert {"fix_issue": FlamingockFixIssueOperator} == {
        t.task_id: type(t) for t in fix_issue_dag.tasks
    }
    assert {"audit_conn_id", "change_id", "resolution"} == set(params.keys())
    assert "flamingock_default" == params["audit_conn_id"]
    assert ["APPLIED", "ROLLED_BACK"] == params.get_param("resolution").schema["enum"]


def run_fix_dag(dag: Any, **conf: Any) -> tuple[str, str, Any]:
    """Run the fix DAG with ``conf``; return the run's state, the task's state and its XCom."""
    dag_run = dag.test(run_conf=conf)
    (task_instance,) = dag_run.get_task_instances()
    return str(dag_run.state), str(task_instance.state), task_instance.xcom_pull("fix_issue")


@pytest.mark.parametrize("resolution", ["APPLIED", "ROLLED_BACK"])
def test_fix_dag_resolves_the_issue_as_the_triggering_user(
    fix_issue_dag: Any, crashed: Any, resolution: str
) -> None:
    """Triggered with a change id and a resolution, the run appends the manual entry.

    Its author is the user who triggered the run (``dag.test()`` triggers as ``dag_test``).
    """
    run_state, task_state, xcom = run_fix_dag(
        fix_issue_dag, change_id="crashed", resolution=resolution
    )

    assert ("success", "success") == (run_state, task_state)
    written = crashed.history()[-1]
    expected = (f"MANUAL_MARKED_AS_{resolution}", DAG_TEST_USER)
    assert expected == (written.state.value, written.author)
    assert written.as_json() == xcom


def test_fix_dag_uses_the_connection_given_in_params(
    fix_issue_dag: Any, sqlite_db: Callable[[str], Any]
) -> None:
    """``audit_conn_id`` in the run's params picks the audit store to fix."""
    other = sqlite_db("other_audit")
    other.record_crash("crashed", "data")

    states = run_fix_dag(fix_issue_dag, audit_conn_id="other_audit", change_id="crashed")

    assert ("success", "success") == states[:2]
    assert ["STARTED", "MANUAL_MARKED_AS_APPLIED"] == other.states()["crashed"]


@pytest.mark.parametrize(
    "conf",
    [
        pytest.param({"change_id": "healthy"}, id="change-without-issue"),
        pytest.param({"change_id": "no-such-change"}, id="unknown-change"),
        pytest.param({}, id="no-change-id"),
    ],
)
def test_fix_dag_with_bad_input_fails_and_writes_nothing(
    fix_issue_dag: Any, crashed: Any, conf: dict[str, Any]
) -> None:
    """A change without an issue, an unknown one or none at all fails the run; nothing written."""
    before = crashed.history()

    run_state, task_state, xcom = run_fix_dag(fix_issue_dag, **conf)

    assert ("failed", "failed", None) == (run_state, task_state, xcom)
    assert before == crashed.history()


def test_fix_dag_refuses_a_resolution_outside_its_enum(fix_issue_dag: Any, crashed: Any) -> None:
    """A resolution other than APPLIED / ROLLED_BACK is rejected by the params; nothing written."""
    before = crashed.history()

    with pytest.raises(Exception, match="DONE"):
        run_fix_dag(fix_issue_dag, change_id="crashed", resolution="DONE")

    assert before == crashed.history()
