"""``flamingock_couchbase`` connections -> `FlamingockCouchbaseHook`, its cluster and its store.

Connections are ``AIRFLOW_CONN_*`` variables (JSON form). Where a cluster is needed it is the
in-memory fake, handed to the hook (``cluster=``) or returned by a patched
``ClusterSettings.open``; `test_connection` against an address where nothing listens uses the
real SDK.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flamingock_provider import get_provider_info
from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.hooks import get_audit_hook
from flamingock_provider.hooks.couchbase import FlamingockCouchbaseHook
from flamingock_provider.stores._couchbase_cluster import ClusterSettings
from flamingock_provider.testing_couchbase import FakeCouchbaseServer

SECRET = "S3cret:PW@x"
CONN_ID = "cb_audit"


@pytest.fixture
def couchbase_connection(define_connection: Callable[..., None]) -> Callable[..., None]:
    """Define ``cb_audit`` as a ``flamingock_couchbase`` connection; override any field."""

    def define(**overrides: Any) -> None:
        extra = {"bucket": "flamingock", **overrides.pop("extra", {})}
        fields: dict[str, Any] = {
            "conn_type": "flamingock_couchbase",
            "host": "couchbases://cb1.example.com,cb2.example.com",
            "login": "flamingock_airflow",
            "password": SECRET,
            "extra": extra,
            **overrides,
        }
        define_connection(CONN_ID, **fields)

    return define


@dataclass
class Fake:
    """A fake cluster server, and the timeout of each ``ClusterSettings.open`` that reached it."""

    server: FakeCouchbaseServer
    openings: list[Any] = field(default_factory=list)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Fake:
    """Every ``ClusterSettings.open`` connects to one in-memory server instead of the network."""
    fake = Fake(FakeCouchbaseServer(buckets=["flamingock"]))

    def open_fake(settings: ClusterSettings, timeout: Any = None) -> Any:
        fake.openings.append(timeout)
        return fake.server.connect()

    monkeypatch.setattr(ClusterSettings, "open", open_fake)
    return fake


# -- choosing and configuring the hook ------------------------------------------------------


def test_couchbase_connection_gives_the_couchbase_hook(
    couchbase_connection: Callable[..., None],
) -> None:
    """``get_audit_hook`` serves a ``flamingock_couchbase`` connection with this hook."""
    couchbase_connection()

    hook = get_audit_hook(CONN_ID)

    assert (FlamingockCouchbaseHook, CONN_ID) == (type(hook), hook.flamingock_conn_id)


def test_connection_fields_and_extras_configure_the_store(
    couchbase_connection: Callable[..., None],
) -> None:
    """Host, login and the extras reach the store; nothing is opened to describe it."""
    couchbase_connection(
        extra={
            "scope": "ops",
            "audit_collection": "audit",
            "lock_collection": "locks",
            "auto_create": "false",
            "durability": "persist_to_majority",
            "cert_path": "/etc/ssl/cb-ca.pem",
            "connect_timeout": 3,
        }
    )
    hook = get_audit_hook(CONN_ID)

    store = hook.get_audit_store()

    assert (
        "couchbases://cb1.example.com,cb2.example.com",
        "flamingock_airflow",
        "/etc/ssl/cb-ca.pem",
        3.0,
    ) == (
        hook.settings.connection_string,
        hook.settings.username,
        hook.settings.cert_path,
        hook.settings.connect_timeout.total_seconds(),
    )
    assert ("flamingock", "ops", "audit", "locks", False, "persist_to_majority", False) == (
        store.bucket_name,
        store.scope_name,
        store.audit_collection_name,
        store.lock_collection_name,
        store.auto_create,
        store.durability,
        store.handle.opened,
    )


def test_defaults_are_the_default_scope_flamingock_collections_and_majority(
    couchbase_connection: Callable[..., None],
) -> None:
    """With only ``bucket`` in the extras: ``_default``, flamingockAuditLog/Lock, majority."""
    couchbase_connection()

    store = get_audit_hook(CONN_ID).get_audit_store()

    assert ("_default", "flamingockAuditLog", "flamingockLock", True, "majority") == (
        store.scope_name,
        store.audit_collection_name,
        store.lock_collection_name,
        store.auto_create,
        store.durability,
    )


def test_a_host_without_a_scheme_means_couchbase(
    couchbase_connection: Callable[..., None],
) -> None:
    """``cb.example.com`` is read as ``couchbase://cb.example.com``."""
    couchbase_connection(host="cb.example.com")

    assert "couchbase://cb.example.com" == get_audit_hook(CONN_ID).settings.connection_string


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"host": "http://cb.example.com"}, "couchbase://"),
        ({"host": ""}, "connection string"),
        ({"login": ""}, "login"),
        ({"extra": {"bucket": ""}}, "'bucket'"),
        ({"extra": {"durability": "quorum"}}, "quorum"),
        ({"extra": {"auto_create": "perhaps"}}, "auto_create"),
        ({"extra": {"connect_timeout": "soon"}}, "connect_timeout"),
    ],
    ids=["scheme", "no-host", "no-login", "no-bucket", "durability", "auto-create", "timeout"],
)
def test_bad_settings_are_validation_errors_naming_the_field(
    couchbase_connection: Callable[..., None], overrides: dict[str, Any], named: str
) -> None:
    """Each bad field is refused before any connection, naming the connection and the field."""
    couchbase_connection(**overrides)

    with pytest.raises(ValidationError) as raised:
        get_audit_hook(CONN_ID).get_audit_store()

    assert (True, True) == (CONN_ID in str(raised.value), named in str(raised.value))


def test_malformed_extras_are_a_validation_error(define_connection: Callable[..., None]) -> None:
    """Extras that are not JSON fail loudly instead of silently meaning "no bucket"."""
    define_connection(
        CONN_ID, conn_type="flamingock_couchbase", host="couchbase://cb", extra="{bucket:"
    )

    with pytest.raises(ValidationError, match="not valid JSON"):
        get_audit_hook(CONN_ID).get_audit_store()


def test_the_password_is_in_no_description_and_no_repr(
    couchbase_connection: Callable[..., None],
) -> None:
    """The store's description and the settings' repr name the cluster, never the password."""
    couchbase_connection()
    hook = get_audit_hook(CONN_ID)

    texts = [hook.get_audit_store().description, repr(hook.settings)]

    assert ([], True) == (
        [t for t in texts if SECRET in t],
        "couchbases://cb1.example.com,cb2.example.com" in texts[0],
    )


# -- the cluster: lazy, cached, closed -------------------------------------------------------


def test_the_cluster_is_opened_once_on_first_use_and_closed_on_exit(
    couchbase_connection: Callable[..., None], fake: Fake
) -> None:
    """No I/O until asked; one connection shared by ``get_conn`` and the store; closed on exit."""
    couchbase_connection()
    with FlamingockCouchbaseHook(CONN_ID) as hook:
        before = list(fake.openings)
        cluster = hook.get_conn()
        store_cluster = hook.get_audit_store().cluster
        same = cluster is store_cluster and cluster is hook.get_conn()

    assert ([], True, 1, True) == (
        before,
        same,
        len(fake.openings),
        cluster.closed,
    )


def test_closing_the_store_closes_the_hooks_cluster(
    couchbase_connection: Callable[..., None], fake: Fake
) -> None:
    """The operator closes only the store: that releases the hook's connection too."""
    couchbase_connection()
    hook = get_audit_hook(CONN_ID)
    store = hook.get_audit_store()
    cluster = store.cluster

    store.close()

    assert True is cluster.closed


def test_an_injected_cluster_is_used_and_left_open(
    couchbase_connection: Callable[..., None],
) -> None:
    """``cluster=`` (tests, the fake) replaces connecting; the caller keeps ownership."""
    couchbase_connection()
    cluster = FakeCouchbaseServer(buckets=["flamingock"]).connect()
    with FlamingockCouchbaseHook(CONN_ID, cluster=cluster) as hook:
        hook.get_audit_store().initialize()
        used = hook.get_conn()

    assert (True, False) == (used is cluster, cluster.closed)


# -- test_connection ----------------------------------------------------------------------


def test_test_connection_reports_whether_the_collections_exist(
    couchbase_connection: Callable[..., None], fake: Fake
) -> None:
    """Before the first run: connected, collections not created yet; after: present."""
    couchbase_connection()
    hook = FlamingockCouchbaseHook(CONN_ID)

    before = hook.test_connection()
    hook.get_audit_store().initialize()
    after = hook.test_connection()

    assert (True, True, "not created yet", "present") == (
        before[0],
        after[0],
        before[1].rsplit("collections ", 1)[1].rstrip("."),
        after[1].rsplit("collections ", 1)[1].rstrip("."),
    )


def test_test_connection_bounds_its_connect_timeout(
    couchbase_connection: Callable[..., None], fake: Fake
) -> None:
    """A probe never waits longer than 5 s to connect, whatever ``connect_timeout`` says."""
    couchbase_connection(extra={"connect_timeout": 120})

    FlamingockCouchbaseHook(CONN_ID).test_connection()

    assert [5.0] == [t.total_seconds() for t in fake.openings]


def test_test_connection_to_a_missing_bucket_returns_false_naming_it(
    couchbase_connection: Callable[..., None], fake: Fake
) -> None:
    """A refusal is returned, not raised, and names what is wrong."""
    couchbase_connection(extra={"bucket": "no_such_bucket"})

    ok, reason = FlamingockCouchbaseHook(CONN_ID).test_connection()

    assert (False, True, False) == (ok, "no_such_bucket" in reason, SECRET in reason)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_test_connection_to_nothing_returns_false_quickly_without_the_password(
    couchbase_connection: Callable[..., None],
) -> None:
    """Real SDK, nothing listening: ``(False, reason)`` within the bound, password scrubbed."""
    couchbase_connection(
        host=f"couchbase://127.0.0.1:{_closed_port()}", extra={"connect_timeout": 1}
    )

    started = time.monotonic()
    ok, reason = FlamingockCouchbaseHook(CONN_ID).test_connection()
    took = time.monotonic() - started

    assert (False, False, True) == (ok, SECRET in reason, took < 8), (reason, took)


# -- provider info and import cost ----------------------------------------------------------


def test_provider_info_declares_the_couchbase_connection_type() -> None:
    """``flamingock_couchbase`` with its hook, extras and the very UI behaviour the hook gives."""
    (entry,) = [
        c
        for c in get_provider_info()["connection-types"]
        if c["connection-type"] == "flamingock_couchbase"
    ]

    assert "flamingock_provider.hooks.couchbase.FlamingockCouchbaseHook" == entry["hook-class-name"]
    assert {
        "bucket",
        "scope",
        "audit_collection",
        "lock_collection",
        "auto_create",
        "durability",
        "cert_path",
        "connect_timeout",
    } == set(entry["conn-fields"])
    assert entry["ui-field-behaviour"] is FlamingockCouchbaseHook.get_ui_field_behaviour()


@pytest.mark.parametrize(
    "code",
    [
        "import flamingock_provider.hooks.couchbase",
        "import flamingock_provider.targets.couchbase",
        "from flamingock_provider.targets.couchbase import CouchbaseTargetSystem\n"
        "CouchbaseTargetSystem('t', conn_id='c', bucket='b')",
        "import importlib.util\n"
        "spec = importlib.util.spec_from_file_location('example', DAG_FILE)\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))",
    ],
    ids=["hook-module", "target-module", "target-declared", "example-dag-file"],
)
def test_declaring_couchbase_things_imports_no_sdk(code: str, dags_folder: Path) -> None:
    """Hook and target modules, a declared target and the example DAG load no ``couchbase``."""
    script = "\n".join(
        [
            "import json, sys",
            f"sys.path.append({str(dags_folder)!r})",
            f"DAG_FILE = {str(dags_folder / 'flamingock_couchbase_example.py')!r}",
            code,
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('couchbase', 'acouchbase')"
            " or m.startswith('flamingock_provider.stores.')]",
            "print(json.dumps(sorted(heavy)))",
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

    assert 0 == done.returncode, done.stderr[-2000:]
    assert [] == json.loads(done.stdout.strip().splitlines()[-1])
