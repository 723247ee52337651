"""Fixtures of the reliability suite, built on the contract suite's kit rather than a copy of it.

- ``sql_world``: a `runner_scenarios.SqlScenario` on each SQL audit store (SQLite, PostgreSQL,
  MariaDB), whose "other database" (separate-transaction targets) is a real second database on
  the same server: a SQLite file of the test, or a database this session creates on
  PostgreSQL/MariaDB (`other_database`) and drops at its end.
- ``shared_world``: the same, plus DynamoDB Local: every store several processes can share.
- The Airflow-layer fixtures (``define_connection``, ``sql_connection``, ``packages``,
  ``audit_db``, ``shop_db``) are those of tests/airflow/conftest.py, loaded from there.

Every table a test creates carries its backend's unique prefix and is dropped at teardown, in
both databases, also when the test fails; so no leftover of one run can decide another's result.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _path in (_TESTS, _TESTS / "contract"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import servers  # noqa: E402
from runner_scenarios import DynamoDBScenario, SqlScenario  # noqa: E402
from store_backends import BACKENDS, DynamoDBBackend, SqlBackend  # noqa: E402


def _load_airflow_fixtures() -> Any:
    spec = importlib.util.spec_from_file_location(
        "flamingock_airflow_fixtures", _TESTS / "airflow" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_airflow = _load_airflow_fixtures()
define_connection = _airflow.define_connection
sql_connection = _airflow.sql_connection
packages = _airflow.packages
audit_db = _airflow.audit_db
shop_db = _airflow.shop_db

SQL_STORES = ("sqlite", "postgresql", "mariadb")
SHARED_STORES = (*SQL_STORES, "dynamodb")
"""Stores several processes can share. The in-process stand-ins (memory, mongomock-ng, the
Couchbase fake) live inside one interpreter and cannot be raced across processes."""


def store_params(ids: tuple[str, ...]) -> list[Any]:
    """``pytest.param`` per store id, those on a server marked ``servers``."""
    on_a_server = {"postgresql", "mariadb", "dynamodb"}
    return [
        pytest.param(i, id=i, marks=[pytest.mark.servers] if i in on_a_server else []) for i in ids
    ]


@pytest.fixture(scope="session")
def other_database() -> Iterator[Callable[[str], str]]:
    """``other_database(server_url)``: the URL of a second database on that server, created once
    per session under a unique name and dropped (connections and all) when the session ends.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    created: dict[str, str] = {}

    def get(url: str) -> str:
        if url not in created:
            name = f"flamingock_rel_{uuid.uuid4().hex[:10]}"
            engine = create_engine(url, isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as conn:
                    conn.execute(text(f"CREATE DATABASE {name}"))
            finally:
                engine.dispose()
            created[url] = make_url(url).set(database=name).render_as_string(hide_password=False)
        return created[url]

    yield get

    for url, other in created.items():
        name = make_url(other).database
        force = " WITH (FORCE)" if url.startswith("postgresql") else ""
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        finally:
            engine.dispose()


def _sql_world(
    store: str, tmp_path: Path, other_database: Callable[[str], str]
) -> Iterator[SqlScenario]:
    backend = BACKENDS[store](tmp_path)
    assert isinstance(backend, SqlBackend)
    other = None if store == "sqlite" else other_database(backend.url)
    world = SqlScenario(backend, tmp_path, other_url=other)
    try:
        yield world
    finally:
        world.close()
        try:
            backend.close()
        finally:
            if other is not None:
                servers.drop_tables_with_prefix(other, backend.prefix)


@pytest.fixture(params=store_params(SQL_STORES))
def sql_world(
    request: pytest.FixtureRequest, tmp_path: Path, other_database: Callable[[str], str]
) -> Iterator[SqlScenario]:
    """A `SqlScenario` on each SQL audit store, with a second database on the same server."""
    yield from _sql_world(request.param, tmp_path, other_database)


@pytest.fixture(params=store_params(SHARED_STORES))
def shared_world(
    request: pytest.FixtureRequest, tmp_path: Path, other_database: Callable[[str], str]
) -> Iterator[SqlScenario | DynamoDBScenario]:
    """A scenario on every audit store that processes can share (SQL stores, DynamoDB Local)."""
    if request.param != "dynamodb":
        yield from _sql_world(request.param, tmp_path, other_database)
        return
    backend = DynamoDBBackend(tmp_path)
    try:
        world = DynamoDBScenario(backend, tmp_path)
        try:
            yield world
        finally:
            world.close()
    finally:
        backend.close()  # deletes every table of the test, the counter table included


@pytest.fixture
def postgresql_world(tmp_path: Path, other_database: Callable[[str], str]) -> Iterator[SqlScenario]:
    """A `SqlScenario` on PostgreSQL only (tests of PostgreSQL's own tools)."""
    yield from _sql_world("postgresql", tmp_path, other_database)
