"""Session set-up shared by every suite: an isolated Airflow home, made before Airflow loads.

Airflow reads its configuration once, when it is first imported, so the environment is set here
at module level (pytest imports this file before any test module). Airflow itself is imported
only by the fixtures below and by the tests that request them: ``tests/unit`` and
``tests/contract`` never pay for it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "dags"
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="flamingock-airflow-home-"))

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{AIRFLOW_HOME}/airflow.db"
os.environ["AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS"] = "False"

# The example DAG's change packages (``example_changes.*``) are imported by dotted name.
if str(DAGS_FOLDER) not in sys.path:
    sys.path.append(str(DAGS_FOLDER))


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's private ``AIRFLOW_HOME`` (already exported to the environment)."""
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def dags_folder() -> Path:
    """The repository's ``dags/`` folder (Airflow's dags folder in this session)."""
    return DAGS_FOLDER


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Iterator[Path]:
    """Create Airflow's metadata database (SQLite, in the session's home) once per session."""
    from airflow.utils import db

    db.initdb()
    yield airflow_home / "airflow.db"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's Airflow home (metadata database, logs, config)."""
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
