"""DAG files stay cheap to parse: no database driver and no store code at import time.

Airflow parses DAG files constantly. Each check runs in a fresh interpreter, because this test
process has long since imported drivers for other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DRIVERS = ("psycopg", "pymysql", "pymongo", "boto3", "botocore", "couchbase")
STORE_MODULES = ("flamingock_provider.stores.sql",)

IMPORT_OPERATOR = "import flamingock_provider.operators.flamingock"
IMPORT_DAG_SURFACE = """\
import flamingock_provider.changes
import flamingock_provider.operators.fix
import flamingock_provider.operators.flamingock
import flamingock_provider.sensors.issues
import flamingock_provider.triggers.issues
from flamingock_provider.targets import HookTargetSystem, SqlTargetSystem
"""
IMPORT_DAG_FILE = """\
import importlib.util
spec = importlib.util.spec_from_file_location("flamingock_example", DAG_FILE)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
"""
PARSE_WITH_DAGBAG = """\
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=DAGS_FOLDER)
assert not bag.import_errors, bag.import_errors
assert "flamingock_example" in bag.dags, sorted(bag.dags)
"""
REPORT = """
import json, sys
heavy = sorted(m for m in sys.modules if m.split(".")[0] in DRIVERS or m in STORE_MODULES)
print(json.dumps(heavy))
"""


def modules_loaded_by(code: str, dags_folder: Path) -> list[str]:
    """Run ``code`` in a fresh interpreter; the drivers and store modules it left loaded."""
    script = "\n".join(
        [
            f"DRIVERS = {DRIVERS!r}",
            f"STORE_MODULES = {STORE_MODULES!r}",
            f"DAGS_FOLDER = {str(dags_folder)!r}",
            f"DAG_FILE = {str(dags_folder / 'flamingock_example.py')!r}",
            "import sys",
            f"sys.path.append({str(dags_folder)!r})",
            textwrap.dedent(code),
            REPORT,
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        IMPORT_OPERATOR,
        "\n".join([IMPORT_OPERATOR, IMPORT_DAG_FILE]),
        IMPORT_DAG_SURFACE,
        PARSE_WITH_DAGBAG,
    ],
    ids=["operator-module", "example-dag-file", "every-dag-facing-module", "dagbag-parse"],
)
def test_parsing_imports_no_driver_and_no_store(code: str, dags_folder: Path) -> None:
    """The operator, the example DAG and every DAG-facing module load no driver and no store.

    ``dagbag-parse`` is Airflow's own parse of the whole dags folder.
    """
    assert [] == modules_loaded_by(code, dags_folder)


def test_the_check_sees_what_a_store_import_loads(dags_folder: Path) -> None:
    """The check itself works: importing the SQL store is reported (so [] above means none)."""
    loaded = modules_loaded_by("import flamingock_provider.stores.sql", dags_folder)

    assert "flamingock_provider.stores.sql" in loaded
