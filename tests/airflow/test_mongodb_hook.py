"""``flamingock_mongodb`` connections -> FlamingockMongoDBHook -> a MongoDB audit store.

Connections are ``AIRFLOW_CONN_*`` variables; ``pymongo.MongoClient`` is replaced by
`mongodb_servers.FakeMongo` (mongomock-ng deployments), which records what the hook asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from mongodb_servers import FakeMongo, patch_pymongo

from flamingock_provider import get_provider_info
from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.hooks import get_audit_hook
from flamingock_provider.hooks.mongodb import FlamingockMongoDBHook

PASSWORD = "p@ss:w/rd%?#"
LOGIN = "flamingock user@corp"
CONN_ID = "mongo_audit"


@pytest.fixture
def fake_mongo(monkeypatch: pytest.MonkeyPatch) -> FakeMongo:
    """``pymongo.MongoClient`` serves one fake replica set, ``mongo-a.test:27017``."""
    fake = patch_pymongo(monkeypatch)
    fake.add("mongo-a.test", 27017)
    return fake


@pytest.fixture
def mongo_connection(define_connection: Callable[..., None]) -> Callable[..., None]:
    """Define ``CONN_ID`` as a ``flamingock_mongodb`` connection; override any field or extra."""

    def define(conn_id: str = CONN_ID, extra: dict[str, Any] | None = None, **fields: Any) -> None:
        values: dict[str, Any] = {
            "conn_type": "flamingock_mongodb",
            "host": "mongo-a.test",
            "port": 27017,
            "login": LOGIN,
            "password": PASSWORD,
            "schema": "flamingock",
            "extra": extra or {},
        }
        values.update(fields)
        define_connection(conn_id, **values)

    return define


# -- choosing and building ----------------------------------------------------------------


def test_mongodb_connection_gives_the_mongodb_hook(mongo_connection: Callable[..., None]) -> None:
    """A ``flamingock_mongodb`` connection is served by FlamingockMongoDBHook for that id."""
    mongo_connection()

    hook = get_audit_hook(CONN_ID)

    assert (FlamingockMongoDBHook, CONN_ID) == (type(hook), hook.flamingock_conn_id)


def test_constructing_the_hook_does_no_io(fake_mongo: FakeMongo) -> None:
    """``__init__`` stores ids only: no connection lookup, no client, even for an unknown id."""
    hook = FlamingockMongoDBHook("no_such_connection_anywhere")

    assert ([], {}) == (fake_mongo.calls, {k: v for k, v in vars(hook).items() if k == "_conn"})


def test_get_conn_is_cached_and_closed_on_exit(
    mongo_connection: Callable[..., None], fake_mongo: FakeMongo
) -> None:
    """``get_conn`` builds one client per hook; leaving the ``with`` block closes it."""
    mongo_connection()

    with FlamingockMongoDBHook(CONN_ID) as hook:
        first, second = hook.get_conn(), hook.get_conn()

    assert (True, 1, True) == (first is second, len(fake_mongo.calls), first._closed)


def test_login_and_password_are_url_escaped(
    mongo_connection: Callable[..., None], fake_mongo: FakeMongo
) -> None:
    """Special characters in login and password reach the driver unchanged."""
    mongo_connection()

    FlamingockMongoDBHook(CONN_ID).get_conn()

    parsed, _ = fake_mongo.calls[0]
    assert (LOGIN, PASSWORD, [("mongo-a.test", 27017)]) == (
        parsed["username"],
        parsed["password"],
        parsed["nodelist"],
    )


def test_extras_become_client_options(
    mongo_connection: Callable[..., None], fake_mongo: FakeMongo
) -> None:
    """``tls``, ``auth_source`` and ``options`` are passed to the client."""
    mongo_connection(
        extra={"tls": "true", "auth_source": "admin", "options": {"replicaSet": "rs0"}}
    )

    FlamingockMongoDBHook(CONN_ID).get_conn()

    _, options = fake_mongo.calls[0]
    expected = {"tls": True, "authSource": "admin", "replicaSet": "rs0", "tz_aware": True}
    assert expected == {k: options[k] for k in expected}


def test_an_extra_set_to_the_empty_string_is_not_an_option(
    mongo_connection: Callable[..., None], fake_mongo: FakeMongo
) -> None:
    """A UI form leaves empty strings behind: they mean "not set", not a TLS option."""
    mongo_connection(extra={"tls": None, "auth_source": ""})

    FlamingockMongoDBHook(CONN_ID).get_conn()

    _, options = fake_mongo.calls[0]
    assert set() == {"tls", "authSource"} & set(options)


# -- extras ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"auto_create": "false", "tls": "true"},
        {"auto_create": False, "tls": True},
        {"auto_create": "0", "tls": "yes"},
    ],
    ids=["strings", "json-booleans", "other-spellings"],
)
def test_boolean_extras_as_strings_or_json_booleans(
    mongo_connection: Callable[..., None], extra: dict[str, Any]
) -> None:
    """``"true"``/``"false"`` strings and JSON booleans read the same."""
    mongo_connection(extra=extra)

    settings = FlamingockMongoDBHook(CONN_ID).settings

    assert (False, True) == (settings.auto_create, settings.tls)


def test_srv_with_a_port_is_refused_clearly(mongo_connection: Callable[..., None]) -> None:
    """``srv`` takes its hosts and ports from DNS: a port as well is a configuration error."""
    mongo_connection(host="cluster0.example.net", extra={"srv": "true"})

    with pytest.raises(ValidationError) as caught:
        FlamingockMongoDBHook(CONN_ID).get_conn()

    message = str(caught.value)
    assert (True, True, True) == (CONN_ID in message, "srv" in message, "port" in message)


def test_srv_builds_a_seedlist_connection_string(
    mongo_connection: Callable[..., None],
) -> None:
    """``srv`` without a port: a ``mongodb+srv://`` location with the SRV name as written."""
    mongo_connection(host="Cluster0.Example.net", port=None, extra={"srv": True})

    settings = FlamingockMongoDBHook(CONN_ID).settings

    assert f"mongodb+srv://{LOGIN}@cluster0.example.net" == settings.location


def test_defaults_are_majority_journaled_primary_and_the_runner_clock(
    mongo_connection: Callable[..., None],
) -> None:
    """Without extras: majority read and write concern with journal, primary, runner clock."""
    mongo_connection()

    s = FlamingockMongoDBHook(CONN_ID).settings

    expected = (
        "majority",
        {"w": "majority", "j": True},
        "primary",
        "runner",
        "flamingockAuditLog",
        "flamingockLock",
        True,
    )
    assert expected == (
        s.read_concern,
        dict(s.write_concern),
        s.read_preference,
        s.lock_clock,
        s.audit_collection,
        s.lock_collection,
        s.auto_create,
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"write_concern": "2"}, {"w": 2, "j": True}),
        (
            {"write_concern": {"w": "majority", "j": False, "wtimeout": 5000}},
            {"w": "majority", "j": False, "wtimeout": 5000},
        ),
        ({"write_concern": '{"w": 3}'}, {"w": 3, "j": True}),
    ],
    ids=["number-string", "object", "object-as-string"],
)
def test_write_concern_forms(
    mongo_connection: Callable[..., None], extra: dict[str, Any], expected: dict[str, Any]
) -> None:
    """``write_concern`` is a ``w`` value or an object of ``w``, ``j``, ``wtimeout``."""
    mongo_connection(extra=extra)

    assert expected == dict(FlamingockMongoDBHook(CONN_ID).settings.write_concern)


def test_concern_names_are_read_case_insensitively(mongo_connection: Callable[..., None]) -> None:
    """Read preference and concern names are normalised to MongoDB's spelling."""
    mongo_connection(extra={"read_preference": "SECONDARYPREFERRED", "read_concern": "Local"})

    s = FlamingockMongoDBHook(CONN_ID).settings

    assert ("secondaryPreferred", "local") == (s.read_preference, s.read_concern)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"extra": {"write_concern": "0"}}, "write_concern"),
        ({"extra": {"read_concern": "snapshot"}}, "read_concern"),
        ({"extra": {"read_preference": "fastest"}}, "read_preference"),
        ({"extra": {"lock_clock": "sundial"}}, "lock_clock"),
        ({"extra": {"auto_create": "maybe"}}, "auto_create"),
        ({"extra": {"options": [1, 2]}}, "options"),
        ({"schema": None}, "schema"),
        ({"host": None}, "host"),
        ({"host": "mongodb://mongo-a.test"}, "host"),
        ({"host": "a.test,b.test"}, "port"),
    ],
    ids=[
        "unacknowledged-writes",
        "read-concern",
        "read-preference",
        "lock-clock",
        "not-a-boolean",
        "options-not-an-object",
        "no-database",
        "no-host",
        "uri-in-host",
        "several-hosts-and-a-port",
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    mongo_connection: Callable[..., None], fields: dict[str, Any], named: str
) -> None:
    """Each bad field raises `ValidationError` naming the connection and the field."""
    mongo_connection(**fields)

    with pytest.raises(ValidationError) as caught:
        FlamingockMongoDBHook(CONN_ID).get_audit_store()

    assert (True, True) == (CONN_ID in str(caught.value), named in str(caught.value))


# -- the store and test_connection ----------------------------------------------------------


def test_audit_store_uses_the_connection_settings(
    mongo_connection: Callable[..., None], fake_mongo: FakeMongo
) -> None:
    """The store gets the database, collections and concerns; its description has no secret."""
    mongo_connection(extra={"audit_collection": "history", "lock_collection": "locks"})

    store = FlamingockMongoDBHook(CONN_ID).get_audit_store()

    expected = (
        "flamingock",
        "history",
        "locks",
        f"MongoDB audit store mongodb://{LOGIN}@mongo-a.test:27017/flamingock "
        "(collections history, locks)",
    )
    assert expected == (
        store.database_name,
        store.audit_collection_name,
        store.lock_collection_name,
        store.description,
    )


def test_test_connection_pings_and_reports_the_collections(
    mongo_connection: Callable[..., None], fake_mongo: FakeMongo
) -> None:
    """A reachable server: True and a message naming the store, before and after creation."""
    mongo_connection()
    hook = FlamingockMongoDBHook(CONN_ID)

    before = hook.test_connection()
    hook.get_audit_store().initialize()
    after = hook.test_connection()

    assert (True, True) == (before[0], after[0])
    assert ("not created yet" in before[1], "present" in after[1]) == (True, True)
    assert [] == [m for _, m in (before, after) if PASSWORD in m]


def test_test_connection_reports_failure_without_raising_or_the_password(
    mongo_connection: Callable[..., None], fake_mongo: FakeMongo
) -> None:
    """An unreachable server gives ``(False, reason)``; the reason holds no password."""
    mongo_connection(host="nowhere.test")

    ok, message = FlamingockMongoDBHook(CONN_ID).test_connection()

    assert (False, True, False) == (ok, "nowhere.test" in message, PASSWORD in message)


def test_an_injected_client_is_used_and_not_closed(fake_mongo: FakeMongo) -> None:
    """``client=``: no client is built, and closing the hook leaves the caller's client open."""
    client = fake_mongo.clusters["mongo-a.test:27017"].client()
    connection = _connection_object()

    with FlamingockMongoDBHook(CONN_ID, connection=connection, client=client) as hook:
        store = hook.get_audit_store()
        store.initialize()

    assert (client, [], False) == (store.client, fake_mongo.calls, client._closed)


def _connection_object() -> Any:
    from airflow.sdk import Connection

    return Connection(
        conn_id=CONN_ID, conn_type="flamingock_mongodb", host="mongo-a.test", schema="flamingock"
    )


# -- provider info and imports -------------------------------------------------------------


def test_provider_info_declares_the_mongodb_connection_type() -> None:
    """``flamingock_mongodb`` is declared with its hook, extras, and the hook's UI behaviour."""
    (entry,) = [
        c
        for c in get_provider_info()["connection-types"]
        if c["connection-type"] == "flamingock_mongodb"
    ]
    hooks = [m for h in get_provider_info()["hooks"] for m in h["python-modules"]]

    assert "flamingock_provider.hooks.mongodb.FlamingockMongoDBHook" == entry["hook-class-name"]
    expected = {
        "srv",
        "tls",
        "auth_source",
        "audit_collection",
        "lock_collection",
        "auto_create",
        "read_concern",
        "write_concern",
        "read_preference",
        "lock_clock",
    }
    assert (expected, True) == (
        set(entry["conn-fields"]),
        "flamingock_provider.hooks.mongodb" in hooks,
    )
    assert entry["ui-field-behaviour"] is FlamingockMongoDBHook.get_ui_field_behaviour()


DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dag_facing_modules_import_no_driver() -> None:
    """The hook and target modules, and the MongoDB example DAG, load neither pymongo nor bson.

    Run in a fresh interpreter: this test process has long since imported pymongo.
    """
    code = f"""
import importlib.util, json, sys
sys.path.append({str(DAGS)!r})
import flamingock_provider.hooks.mongodb
import flamingock_provider.targets.mongodb
dag_file = {str(DAGS / "flamingock_mongodb_example.py")!r}
spec = importlib.util.spec_from_file_location("dag", dag_file)
spec.loader.exec_module(importlib.util.module_from_spec(spec))
heavy = [m for m in sys.modules if m.split(".")[0] in ("pymongo", "bson", "mongomock_ng", "gridfs")]
heavy += [m for m in sys.modules if m == "flamingock_provider.stores.mongodb"]
print(json.dumps(sorted(heavy)))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert 0 == done.returncode, done.stderr[-3000:]
    assert [] == json.loads(done.stdout.strip().splitlines()[-1])


def test_password_never_appears_when_the_server_is_unreachable(
    mongo_connection: Callable[..., None],
) -> None:
    """A real driver failing to reach the server: errors and descriptions hold no password."""
    mongo_connection(host="127.0.0.1", port=1, extra={"options": {"serverSelectionTimeoutMS": 200}})
    hook = FlamingockMongoDBHook(CONN_ID)
    store = hook.get_audit_store()
    texts = [store.description, hook.test_connection()[1]]
    try:
        for call in (store.initialize, store.read_latest, lambda: store.lock_holder("K")):
            with pytest.raises(Exception) as caught:
                call()
            texts.append(str(caught.value))
            texts.append("".join(traceback.format_exception(caught.value)))
    finally:
        hook.__exit__(None, None, None)

    assert "AuditStoreError" == type(caught.value).__name__
    assert [] == [t for t in texts if PASSWORD in t or quote_plus(PASSWORD) in t]
