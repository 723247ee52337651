"""How Airflow discovers the provider: ``get_provider_info``, its entry point, the CLI."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from flamingock_provider import get_provider_info
from flamingock_provider.hooks.sql import FlamingockSqlHook

PACKAGE = "airflow-provider-flamingock"
AIRFLOW = Path(sys.executable).parent / "airflow"


def connection_type(conn_type: str) -> dict[str, Any]:
    """The provider info's entry for one connection type."""
    (entry,) = [
        c for c in get_provider_info()["connection-types"] if c["connection-type"] == conn_type
    ]
    return entry


def airflow_cli(*args: str) -> Any:
    """Run ``airflow <args> -o json`` with the session's AIRFLOW_HOME; its parsed output."""
    done = subprocess.run(
        [str(AIRFLOW), *args, "-o", "json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_provider_info_names_the_package() -> None:
    """The package name Airflow lists is the distribution's name."""
    assert PACKAGE == get_provider_info()["package-name"]


def test_provider_info_declares_the_sql_connection_type() -> None:
    """``flamingock_sql`` is declared with its hook, its extra fields and its UI behaviour."""
    entry = connection_type("flamingock_sql")

    assert "flamingock_provider.hooks.sql.FlamingockSqlHook" == entry["hook-class-name"]
    expected_fields = {"url", "dialect", "audit_table", "lock_table", "auto_create"}
    assert expected_fields == set(entry["conn-fields"])
    assert {"hidden-fields", "relabeling", "placeholders"} <= set(entry["ui-field-behaviour"])


def test_every_declared_hook_class_exists_with_its_conn_type() -> None:
    """Each declared hook class imports, and its ``conn_type`` is the one it is declared for."""
    for entry in get_provider_info()["connection-types"]:
        module, _, name = entry["hook-class-name"].rpartition(".")
        hook_class = getattr(importlib.import_module(module), name)
        assert entry["connection-type"] == hook_class.conn_type


def test_every_declared_module_imports() -> None:
    """Every hook and operator module the provider info lists can be imported."""
    info = get_provider_info()
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(kind, []):
            for module in entry["python-modules"]:
                importlib.import_module(module)


def test_ui_field_behaviour_is_the_same_wherever_airflow_reads_it() -> None:
    """The provider info's UI behaviour and the hook's ``get_ui_field_behaviour`` agree.

    Airflow >= 3.2 reads the provider info; older versions call the hook's method.
    """
    entry = connection_type("flamingock_sql")

    assert entry["ui-field-behaviour"] == FlamingockSqlHook.get_ui_field_behaviour()


def test_entry_point_resolves_to_get_provider_info() -> None:
    """The ``apache_airflow_provider`` entry point loads `get_provider_info`."""
    found = [
        ep.load()
        for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("flamingock_provider")
    ]

    assert [get_provider_info] == found


@pytest.mark.usefixtures("airflow_home")
def test_airflow_lists_the_provider_and_its_hook() -> None:
    """``airflow providers list`` shows the package; ``providers hooks`` maps the conn type."""
    providers = {p["package_name"]: p["version"] for p in airflow_cli("providers", "list")}
    hooks = {h["connection_type"]: h["class"] for h in airflow_cli("providers", "hooks")}

    from flamingock_provider import __version__

    assert __version__ == providers.get(PACKAGE)
    assert "flamingock_provider.hooks.sql.FlamingockSqlHook" == hooks.get("flamingock_sql")
