"""Fixtures of the contract suite: ``store_factory`` (every audit store) and
``sql_store_factory`` (the SQL ones), parametrised over `store_backends.BACKENDS`.

Call the fixture to get a store on the test's own tables; each call returns another store on the
same tables. Everything is closed and dropped at teardown, also when the test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from store_backends import BACKENDS, ON_A_SERVER, SQL_BACKENDS, Backend, SqlBackend


def _params(ids: tuple[str, ...]) -> list[Any]:
    return [
        pytest.param(i, id=i, marks=[pytest.mark.servers] if i in ON_A_SERVER else []) for i in ids
    ]


def _open(backend_id: str, tmp_path: Path) -> Iterator[Backend]:
    backend = BACKENDS[backend_id](tmp_path)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(params=_params(tuple(BACKENDS)))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Build audit stores of every kind, all on this test's own tables."""
    yield from _open(request.param, tmp_path)


@pytest.fixture(params=_params(SQL_BACKENDS))
def sql_store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlBackend]:
    """Build SQL audit stores (SQLite, PostgreSQL, MariaDB), all on this test's own tables."""
    yield from cast("Iterator[SqlBackend]", _open(request.param, tmp_path))
