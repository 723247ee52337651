"""FlamingockIssueTrigger on a real event loop: JSON kwargs, polling, never blocking the loop.

The trigger is run with ``asyncio.run`` as the triggerer would run it; the audit store is a
SQLite file reached through ``AIRFLOW_CONN_FLAMINGOCK_DEFAULT``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from flamingock_provider.engine.issues import fix_issue
from flamingock_provider.engine.model import AuditState
from flamingock_provider.stores.sql import SqlAuditStore
from flamingock_provider.triggers.issues import FlamingockIssueTrigger

SECRET = "S3cretPW"
UNREACHABLE_PG = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/no_such_db_xyz"


def make_trigger(**overrides: Any) -> FlamingockIssueTrigger:
    """A trigger on ``flamingock_default`` polling every 50 ms; override any argument."""
    fields: dict[str, Any] = {"audit_conn_id": "flamingock_default", "poll_interval": 0.05}
    fields.update(overrides)
    return FlamingockIssueTrigger(**fields)


def fixer(url: str, change_id: str) -> Callable[[], None]:
    """A step that resolves ``change_id`` as APPLIED, as a person would from elsewhere."""

    def fix() -> None:
        store = SqlAuditStore(url)
        try:
            fix_issue(store, change_id, "APPLIED", author="ada")
        finally:
            store.close()

    return fix


# -- serialisation ------------------------------------------------------------------------


def test_serialize_gives_the_class_path_and_plain_json_kwargs() -> None:
    """``serialize()`` names the class and holds only JSON values, surviving a JSON round trip."""
    trigger = make_trigger(stages=["schema", "data"], change_ids=["c1"], poll_interval=7)

    classpath, kwargs = trigger.serialize()

    assert "flamingock_provider.triggers.issues.FlamingockIssueTrigger" == classpath
    expected = {
        "audit_conn_id": "flamingock_default",
        "stages": ["schema", "data"],
        "change_ids": ["c1"],
        "poll_interval": 7.0,
    }
    assert expected == json.loads(json.dumps(kwargs))


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"stages": ["schema"]},
        {"change_ids": ["c1", "c2"], "poll_interval": 1.5},
        {"stages": ("schema",), "change_ids": ("c1",)},
    ],
)
def test_trigger_rebuilt_from_its_serialized_form_is_the_same(arguments: dict[str, Any]) -> None:
    """The triggerer rebuilds the trigger from ``serialize()``: class path + JSON kwargs."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = make_trigger(**arguments).serialize()

    rebuilt = import_string(classpath)(**json.loads(json.dumps(kwargs)))

    assert (classpath, kwargs) == rebuilt.serialize()


# -- run ----------------------------------------------------------------------------------


def test_fires_at_once_when_no_issue_is_open(
    audit_db: Any, watch_trigger: Callable[..., Any]
) -> None:
    """With every change healthy the first check succeeds, listing the changes it checked."""
    audit_db.record_crash("c1", "s1", state=AuditState.APPLIED)
    audit_db.record_crash("c2", "s2", state=AuditState.MANUAL_MARKED_AS_APPLIED)

    run = watch_trigger(make_trigger(), settle=0)

    assert {"status": "success", "checked": ["c1", "c2"]} == run.event.payload


def test_fires_at_once_on_a_store_that_was_never_used(
    audit_db: Any, watch_trigger: Callable[..., Any]
) -> None:
    """A store without tables holds no issue: success, nothing checked, no table created."""
    run = watch_trigger(make_trigger(), settle=0)

    assert ({"status": "success", "checked": []}, set()) == (run.event.payload, audit_db.tables())


def test_fires_only_after_the_issue_is_fixed(
    audit_db: Any, watch_trigger: Callable[..., Any]
) -> None:
    """While an issue is open the trigger keeps polling; the fix makes it fire."""
    audit_db.record_crash("c1", "s1")

    run = watch_trigger(make_trigger(), resolve=fixer(audit_db.url, "c1"), settle=0.3)

    assert [] == run.before
    assert {"status": "success", "checked": ["c1"]} == run.event.payload


def test_ignores_issues_outside_its_stages_and_changes(
    audit_db: Any, watch_trigger: Callable[..., Any]
) -> None:
    """Issues of other stages or other changes do not hold the trigger."""
    audit_db.record_crash("elsewhere", "other-stage")
    audit_db.record_crash("mine", "my-stage", state=AuditState.APPLIED)

    by_stage = watch_trigger(make_trigger(stages=["my-stage"]), settle=0)
    by_change = watch_trigger(make_trigger(change_ids=["mine"]), settle=0)

    expected = {"status": "success", "checked": ["mine"]}
    assert (expected, expected) == (by_stage.event.payload, by_change.event.payload)


def test_store_calls_never_block_the_event_loop(
    audit_db: Any, watch_trigger: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each store read runs off the loop's thread: a 300 ms read never stalls the loop's ticker.

    The connection is fetched with the async API: the blocking ``BaseHook.get_connection`` is
    made to fail.
    """
    from airflow.sdk import BaseHook

    import flamingock_provider.engine.issues as issues

    real_scan = issues.scan
    reads: list[str] = []

    def slow_scan(*args: Any, **kwargs: Any) -> Any:
        reads.append(threading.current_thread().name)
        time.sleep(0.3)
        return real_scan(*args, **kwargs)

    def no_blocking_lookup(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the trigger fetched its connection with the blocking API")

    monkeypatch.setattr(issues, "scan", slow_scan)
    monkeypatch.setattr(BaseHook, "get_connection", no_blocking_lookup)
    audit_db.record_crash("c1", "s1")

    run = watch_trigger(make_trigger(), resolve=fixer(audit_db.url, "c1"), settle=0.4)

    assert "success" == run.event.payload["status"]
    assert run.longest_stall < 0.2, run.longest_stall
    assert len(reads) >= 2  # polled while the issue was open, then once more after the fix
    assert [] == [name for name in reads if name == run.loop_thread]


def test_unreachable_store_fires_an_error_without_the_password(
    sql_connection: Callable[..., None], watch_trigger: Callable[..., Any]
) -> None:
    """A store that cannot be read ends the wait with an error event that hides the password."""
    sql_connection("flamingock_default", UNREACHABLE_PG)

    run = watch_trigger(make_trigger(), settle=0)

    assert "error" == run.event.payload["status"]
    assert "no_such_db_xyz" in run.event.payload["message"]
    assert SECRET not in json.dumps(run.event.payload)


def test_connection_of_another_kind_fires_an_error_naming_it(
    define_connection: Callable[..., None], watch_trigger: Callable[..., Any]
) -> None:
    """A connection that is not a Flamingock audit store: an error event naming it."""
    define_connection("not_flamingock", conn_type="http", host="example.com")

    run = watch_trigger(make_trigger(audit_conn_id="not_flamingock"), settle=0)

    assert "error" == run.event.payload["status"]
    assert "not_flamingock" in run.event.payload["message"]


def test_missing_connection_fires_an_error_naming_it(watch_trigger: Callable[..., Any]) -> None:
    """An undefined audit connection ends the wait with an error event naming it."""
    run = watch_trigger(make_trigger(audit_conn_id="no_such_audit_conn"), settle=0)

    assert "error" == run.event.payload["status"]
    assert "no_such_audit_conn" in run.event.payload["message"]
