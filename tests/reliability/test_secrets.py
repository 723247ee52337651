"""Secrets: a connection's password appears nowhere, however the connection fails.

The password (``S3cretPW-<uuid>``, new each session) belongs to a PostgreSQL connection to a
database that does not exist, written three ways: an Airflow connection URI, the ``password``
field beside host/login/schema and extra ``dialect``, and inside extra ``url``. Every surface
then fails on it: the operator (task failure), the issue sensor's poke, the CLI (``--conn-uri``
/ ``--conn-json``), ``hook.test_connection()``, and a run whose *target* is that connection
while the audit store works (so audit records are written, with the error's trace).

Everything is captured and scanned: log records of every logger at DEBUG (also those that do
not propagate), standard output and error at the file-descriptor level (``capfd``, a superset
of ``capsys`` that also sees output of handlers bound to the original streams), ``str`` and
``repr`` of every exception in the ``__cause__``/``__context__`` chains and the formatted
traceback, return values, and every audit record written.
"""

from __future__ import annotations

import io
import json
import logging
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import servers

from flamingock_provider.changes import Stage

TOKEN = uuid.uuid4().hex
PASSWORD = f"S3cretPW-{TOKEN}"
MISSING_DB = f"flamingock_no_such_db_{TOKEN[:8]}"
CONN_ID = "flamingock_secret"
PG_URL = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/{MISSING_DB}"

FORMS: dict[str, dict[str, Any] | str] = {
    "conn-uri": (
        f"flamingock-sql://postgres:{PASSWORD}@127.0.0.1:5432/{MISSING_DB}"
        "?dialect=postgresql%2Bpsycopg"
    ),
    "password-field": {
        "conn_type": "flamingock_sql",
        "host": "127.0.0.1",
        "port": 5432,
        "login": "postgres",
        "password": PASSWORD,
        "schema": MISSING_DB,
        "extra": {"dialect": "postgresql+psycopg"},
    },
    "extra-url": {"conn_type": "flamingock_sql", "extra": {"url": PG_URL}},
}


class Evidence:
    """Every text a failure produced: messages, reprs, tracebacks, values, records."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def error(self, err: BaseException) -> None:
        """The exception, every exception chained to it, and the formatted traceback."""
        seen: set[int] = set()
        todo: list[BaseException | None] = [err]
        while todo:
            current = todo.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            self.texts += [str(current), repr(current), *map(repr, current.args)]
            todo += [current.__cause__, current.__context__]
        self.texts.append("".join(traceback.format_exception(err)))

    def value(self, value: Any) -> None:
        self.texts += [repr(value), json.dumps(value, default=repr)]

    def leaks(self) -> list[str]:
        """The texts holding the password, or any recognisable part of it."""
        return [t for t in self.texts if PASSWORD in t or TOKEN in t]

    def mentions(self, text: str) -> bool:
        return any(text in t for t in self.texts)


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` at DEBUG for every logger, its handler also on loggers that do not propagate."""
    caplog.set_level(logging.DEBUG)
    patched: list[logging.Logger] = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        caplog.set_level(logging.DEBUG, logger=name)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
            patched.append(logger)
    try:
        yield caplog
    finally:
        for logger in patched:
            logger.removeHandler(caplog.handler)


def _define(define_connection: Callable[..., None], conn_id: str, form: str) -> None:
    value = FORMS[form]
    if isinstance(value, str):
        define_connection(conn_id, value)
    else:
        define_connection(conn_id, **value)


def _cli_source(form: str) -> list[str]:
    value = FORMS[form]
    return ["--conn-uri", value] if isinstance(value, str) else ["--conn-json", json.dumps(value)]


def _operator(stage: Stage, evidence: Evidence, **fields: Any) -> None:
    from airflow.sdk.exceptions import AirflowException

    from flamingock_provider.operators.flamingock import FlamingockOperator

    operator = FlamingockOperator(task_id="apply_changes", stages=[stage], **fields)
    with pytest.raises(AirflowException) as failed:
        evidence.value(operator.execute(context={}))
    evidence.error(failed.value)


def audit_store(evidence: Evidence, stage: Stage, shop: Any, **_: Any) -> None:
    """The operator, with the password-bearing connection as its audit store."""
    from flamingock_provider.targets import SqlTargetSystem

    target = SqlTargetSystem("shop-db", url=shop.url)
    _operator(stage, evidence, audit_conn_id=CONN_ID, target_systems=[target])


def target_system(evidence: Evidence, stage: Stage, audit: Any, **_: Any) -> None:
    """The operator on a working audit store, the connection as its target (markers off, so the
    change starts, fails, and its audit records carry the error's trace).
    """
    from flamingock_provider.targets import SqlTargetSystem

    target = SqlTargetSystem("shop-db", conn_id=CONN_ID, markers=False)
    _operator(stage, evidence, target_systems=[target])
    records = [e.as_json() for e in audit.history()]
    assert {"STARTED", "FAILED"} == {r["state"] for r in records}
    evidence.value(records)


def sensor_poke(evidence: Evidence, **_: Any) -> None:
    """The issue sensor's poke."""
    from airflow.sdk.exceptions import AirflowException

    from flamingock_provider.sensors.issues import FlamingockIssueSensor

    sensor = FlamingockIssueSensor(task_id="no_open_issues", audit_conn_id=CONN_ID)
    with pytest.raises(AirflowException) as failed:
        evidence.value(sensor.poke(context={}))
    evidence.error(failed.value)


def cli(evidence: Evidence, form: str, **_: Any) -> None:
    """``flamingock-airflow <connection> issue list``: exit 3, the store could not be used."""
    from flamingock_provider.cli import main

    out = io.StringIO()
    code = main([*_cli_source(form), "issue", "list"], out)
    assert 3 == code
    evidence.value(out.getvalue())


def hook_test_connection(evidence: Evidence, **_: Any) -> None:
    """``hook.test_connection()``: ``(False, reason)``."""
    from flamingock_provider.hooks import get_audit_hook

    ok, message = get_audit_hook(CONN_ID).test_connection()
    assert ok is False
    evidence.value((ok, message))


SURFACES = [audit_store, target_system, sensor_poke, cli, hook_test_connection]


@pytest.mark.servers
@pytest.mark.parametrize("surface", SURFACES, ids=[s.__name__ for s in SURFACES])
@pytest.mark.parametrize("form", list(FORMS))
def test_the_password_of_a_failing_connection_appears_nowhere(
    form: str,
    surface: Callable[..., None],
    define_connection: Callable[..., None],
    audit_db: Any,
    shop_db: Any,
    packages: Any,
    every_log: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The surface fails on the missing database (and says which), yet no log line, output,
    exception, traceback, return value or audit record holds the password.
    """
    servers.require_postgresql()
    _define(define_connection, CONN_ID, form)
    stage = packages.stage("secrets", ["touch-nothing"])
    evidence = Evidence()

    surface(evidence, stage=stage, audit=audit_db, shop=shop_db, form=form)

    captured = capfd.readouterr()
    evidence.texts += [captured.out, captured.err, every_log.text]
    evidence.texts += [r.getMessage() for r in every_log.records]
    evidence.texts += [repr(r.args) for r in every_log.records]
    assert [] == evidence.leaks()
    assert evidence.mentions(MISSING_DB), "the failure should name the database it could not use"


def test_a_password_with_an_unescaped_at_sign_is_not_shown_as_the_host(
    define_connection: Callable[..., None],
) -> None:
    """``postgresql://user:S3cret@PW-...@host/db`` in extra ``url``: no part of the password
    reaches the store's description (the text every message and log line starts with).
    Checked without connecting: the misparsed host would be looked up in DNS.
    """
    from flamingock_provider.engine.errors import ValidationError
    from flamingock_provider.hooks import get_audit_hook

    url = f"postgresql+psycopg://postgres:S3cret@PW-{TOKEN}@127.0.0.1:5432/{MISSING_DB}"
    define_connection(CONN_ID, conn_type="flamingock_sql", extra={"url": url})
    evidence = Evidence()

    try:
        store = get_audit_hook(CONN_ID).get_audit_store()
    except ValidationError as err:
        evidence.error(err)
    else:
        evidence.value(store.description)
        evidence.value(repr(store.url))

    assert [] == evidence.leaks()
