"""The database servers the tests use, and what to do when one does not answer.

PostgreSQL and MariaDB run on the test machine (ARCHITECTURE.md §7). A test that needs one asks
for its URL with `require_postgresql()` / `require_mariadb()`: when the server does not answer
the test is skipped with the reason, or fails when ``FLAMINGOCK_TEST_REQUIRE_SERVERS=1`` (``make
test`` sets it, so CI can never pass by skipping). The servers outlive test runs and are shared
by concurrent runs: every test works in tables of its own (`unique_prefix()`) and drops them
(`drop_tables_with_prefix()`).
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path

import pytest

REQUIRE_ENV = "FLAMINGOCK_TEST_REQUIRE_SERVERS"
POSTGRESQL_URL = os.environ.get(
    "FLAMINGOCK_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "FLAMINGOCK_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
CONNECT_TIMEOUT_SECONDS = 2


def servers_required() -> bool:
    """Whether an unreachable server fails the test instead of skipping it."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


@functools.cache
def _probe(url: str) -> str | None:
    """Connect once (bounded by the timeout); the reason it failed, or None when it answered."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
    finally:
        engine.dispose()
    return None


def postgresql_url() -> str | None:
    """The PostgreSQL test database URL if the server answers, else None."""
    return None if _probe(POSTGRESQL_URL) else POSTGRESQL_URL


def mariadb_url() -> str | None:
    """The MariaDB test database URL if the server answers, else None."""
    return None if _probe(MARIADB_URL) else MARIADB_URL


def _require(name: str, url: str) -> str:
    reason = _probe(url)
    if reason is None:
        return url
    message = f"{name} at {_safe(url)} does not answer ({reason})"
    if servers_required():
        pytest.fail(f"{message}; {REQUIRE_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(message)


def require_postgresql() -> str:
    """The PostgreSQL URL; skips the test (or fails it, see module doc) when unreachable."""
    return _require("PostgreSQL", POSTGRESQL_URL)


def require_mariadb() -> str:
    """The MariaDB URL; skips the test (or fails it, see module doc) when unreachable."""
    return _require("MariaDB", MARIADB_URL)


def sqlite_url(path: Path) -> str:
    """A SQLAlchemy URL for a SQLite file."""
    return f"sqlite:///{Path(path).resolve()}"


def unique_prefix() -> str:
    """A table-name prefix no other test or run uses: ``t_<8 hex>_``."""
    return f"t_{uuid.uuid4().hex[:8]}_"


def drop_tables_with_prefix(url: str, prefix: str) -> list[str]:
    """Drop every table whose name starts with ``prefix``; return their names.

    Waits at most a few seconds for table locks, so a teardown never hangs behind a stuck
    session; a table it could not drop raises.
    """
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url, connect_args=_lock_timeout_args(url))
    try:
        with engine.begin() as conn:
            names = [n for n in inspect(conn).get_table_names() if n.startswith(prefix)]
            quote = conn.dialect.identifier_preparer.quote
            for name in names:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
        return names
    finally:
        engine.dispose()


def _lock_timeout_args(url: str) -> dict[str, object]:
    if url.startswith("postgresql"):
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "options": "-c lock_timeout=5000"}
    if url.startswith(("mysql", "mariadb")):
        return {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "init_command": "SET SESSION lock_wait_timeout = 5",
        }
    return {}


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
