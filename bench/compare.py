"""Measurements against something outside the provider: Python's import cost, alembic."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import workload

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DRIVERS = ("psycopg", "pymysql", "pymongo", "boto3", "botocore", "couchbase")

_PARSE = (
    "import runpy, sys; sys.path.insert(0, {dags!r}); "
    "runpy.run_path({dag!r}); "
    "print('DRIVERS', [m for m in {drivers!r} if m in sys.modules])"
)


def dag_parse() -> dict[str, Any]:
    """``python -X importtime`` of the example DAG: the provider's share, and no driver."""
    dag = REPO / "dags" / "flamingock_example.py"
    code = _PARSE.format(dags=str(REPO / "dags"), dag=str(dag), drivers=DRIVERS)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=REPO,
    )
    own = total = 0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[12:].split("|"))
        if name.lstrip().startswith("flamingock_provider"):
            own += int(self_us)
        if not name.startswith(" "):  # a top-level import: its cumulative time counts once
            total += int(cumulative_us)
    drivers = proc.stdout.split("DRIVERS", 1)[1].strip()
    return {"own_ms": own / 1000, "total_ms": total / 1000, "drivers": drivers}


_ENV_PY = """
from alembic import context
from sqlalchemy import create_engine

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, version_table=config.get_main_option("vt"))
    with context.begin_transaction():
        context.run_migrations()
"""

_REVISION = """revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
"""


def alembic_upgrade(url: str, revisions: int) -> dict[str, Any]:
    """``alembic upgrade head`` over ``revisions`` no-op revisions, loading scripts included."""
    from alembic import command
    from alembic.config import Config

    root = Path(tempfile.mkdtemp(prefix="flamingock-alembic-"))
    (root / "versions").mkdir()
    (root / "env.py").write_text(_ENV_PY)
    (root / "script.py.mako").write_text("")
    down = None
    for i in range(revisions):
        rev = f"r{i:05d}"
        (root / "versions" / f"{rev}_noop.py").write_text(_REVISION.format(rev=rev, down=down))
        down = rev
    version_table = f"alembic_bench_{os.getpid()}_{int(time.time())}"
    config = Config()
    config.set_main_option("script_location", str(root))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option("vt", version_table)
    started = time.perf_counter()
    command.upgrade(config, "head")
    elapsed = time.perf_counter() - started
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {version_table}"))
    engine.dispose()
    return {"s": elapsed}


def flamingock_fresh(backend: Any, revisions: int) -> dict[str, Any]:
    """Our side of the alembic comparison: discover + apply ``revisions`` fresh changes."""
    package = workload.write_package(revisions)
    store = backend.store()
    started = time.perf_counter()
    result = workload.run(store, workload.pipeline_for(package))
    elapsed = time.perf_counter() - started
    assert len(result.applied) == revisions
    return {"s": elapsed}
