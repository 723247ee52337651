"""FlamingockMongoDBHook: an Airflow connection of type ``flamingock_mongodb`` -> a MongoDB store.

Host, port, login, password and schema (the database) describe the server; extras add ``srv``,
``tls``, ``auth_source``, the collection names, ``auto_create``, the concerns, ``lock_clock``
and ``options`` (further MongoClient options, e.g. ``replicaSet``). The client is built on first
`get_conn`, never in ``__init__``; pymongo is imported only then. The password is URL-escaped
into the connection string and appears in no description, message or log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.hooks._base import FlamingockHook
from flamingock_provider.hooks._extras import as_bool, parse_extras

if TYPE_CHECKING:
    from pymongo import MongoClient

    from flamingock_provider.stores.mongodb import MongoAuditStore

DEFAULT_PORT = 27017
READ_CONCERNS = ("local", "available", "majority", "linearizable")
READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")


@dataclass(frozen=True)
class MongoSettings:
    """Everything a connection says about the server and the store, checked, without secrets."""

    hosts: tuple[str, ...]
    database: str
    login: str | None = None
    srv: bool = False
    tls: bool | None = None
    auth_source: str | None = None
    audit_collection: str = "flamingockAuditLog"
    lock_collection: str = "flamingockLock"
    auto_create: bool = True
    read_concern: str = "majority"
    write_concern: Mapping[str, Any] = field(default_factory=lambda: {"w": "majority", "j": True})
    read_preference: str = "primary"
    lock_clock: str = "runner"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return "mongodb+srv" if self.srv else "mongodb"

    @property
    def location(self) -> str:
        """``scheme://login@hosts`` — no password, for messages."""
        user = f"{self.login}@" if self.login else ""
        return f"{self.scheme}://{user}{','.join(self.hosts)}"

    @property
    def cluster(self) -> str:
        """Deployment and user: equal for two connections that may share one client."""
        return f"{self.scheme}://{self.login or ''}@{','.join(sorted(self.hosts))}"


def parse_settings(conn_id: str, conn: Any, *, require_database: bool = True) -> MongoSettings:
    """Read and check an Airflow connection's fields and extras (no I/O, no driver).

    :raises ValidationError: naming the connection and the field at fault.
    """
    extras = parse_extras(conn_id, conn.extra)

    def fail(message: str) -> ValidationError:
        return ValidationError(f"Airflow connection '{conn_id}': {message}")

    srv = as_bool(conn_id, "srv", extras.get("srv"), False)
    host = (conn.host or "").strip()
    if not host:
        raise fail("set the host (a host name, 'h1:27017,h2:27017', or the SRV name with srv)")
    if "://" in host or "@" in host or "/" in host:
        raise fail("the host must be host names only; put credentials in login/password")
    if srv and conn.port:
        raise fail(
            "srv=true takes no port: the SRV record gives the hosts and ports. "
            "Clear the port, or set srv=false to connect to host:port"
        )
    hosts = [h.strip() for h in host.split(",") if h.strip()]
    if srv and len(hosts) != 1:
        raise fail("srv=true takes exactly one host name (the SRV name)")
    if conn.port and len(hosts) > 1:
        raise fail("with several hosts, write each port in the host field (h1:27017,h2:27018)")
    if not srv:
        port = conn.port or DEFAULT_PORT
        hosts = [h if ":" in h else f"{h}:{port}" for h in hosts]
    if require_database and not conn.schema:
        raise fail("set the schema field to the database that holds the audit collections")
    settings: dict[str, Any] = {
        "hosts": tuple(h.lower() for h in hosts),
        "database": conn.schema or "",
        "login": conn.login or None,
        "srv": srv,
        "auto_create": as_bool(conn_id, "auto_create", extras.get("auto_create"), True),
    }
    if extras.get("tls") is not None:
        settings["tls"] = as_bool(conn_id, "tls", extras["tls"], False)
    for name in ("auth_source", "audit_collection", "lock_collection"):
        if extras.get(name):
            settings[name] = str(extras[name])
    if extras.get("read_concern"):
        settings["read_concern"] = _choice(
            fail, "read_concern", extras["read_concern"], READ_CONCERNS
        )
    if extras.get("read_preference"):
        settings["read_preference"] = _choice(
            fail, "read_preference", extras["read_preference"], READ_PREFERENCES
        )
    if extras.get("lock_clock"):
        settings["lock_clock"] = _choice(
            fail, "lock_clock", extras["lock_clock"], ("runner", "server")
        )
    if extras.get("write_concern") not in (None, ""):
        settings["write_concern"] = _write_concern(fail, extras["write_concern"])
    options = extras.get("options")
    if options:
        options = parse_extras(conn_id, options) if isinstance(options, str) else options
        if not isinstance(options, dict):
            raise fail("extra 'options' must be a JSON object of MongoClient options")
        settings["options"] = dict(options)
    return MongoSettings(**settings)


def _choice(fail: Any, name: str, value: Any, allowed: tuple[str, ...]) -> str:
    for option in allowed:
        if str(value).strip().lower() == option.lower():
            return option
    raise fail(f"extra '{name}' must be one of {', '.join(allowed)}, got {value!r}")


def _write_concern(fail: Any, value: Any) -> dict[str, Any]:
    """``"majority"``, a number, a tag, or ``{"w": .., "j": .., "wtimeout": ..}``; journal on."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise fail(f"extra 'write_concern' is not valid JSON: {value!r}") from None
    concern: dict[str, Any] = {"w": "majority", "j": True}
    if isinstance(value, dict):
        unknown = set(value) - {"w", "j", "wtimeout"}
        if unknown:
            raise fail(f"extra 'write_concern' has unknown keys {sorted(unknown)} (w, j, wtimeout)")
        concern.update(value)
    else:
        concern["w"] = value
    w = concern["w"]
    if isinstance(w, str) and w.strip().isdigit():
        w = int(w)
    if isinstance(w, bool) or (isinstance(w, int) and w < 1) or w in ("", None):
        raise fail(
            f"extra 'write_concern' needs w >= 1 or 'majority' (got {concern['w']!r}): every "
            "audit write must be acknowledged to be checked"
        )
    concern["w"] = w
    concern["j"] = as_bool("write_concern", "j", concern.get("j"), True)
    return concern


class FlamingockMongoDBHook(FlamingockHook):
    """Connect to a MongoDB audit store.

    :param flamingock_conn_id: the Airflow connection id (conn type ``flamingock_mongodb``).
    :param connection: an already fetched connection (no lookup).
    :param client: a ready client to use instead of building one (tests, mongomock-ng); the
        caller keeps owning it.
    :param require_database: refuse a connection without schema (off for target systems,
        which may name their database themselves).
    """

    conn_type = "flamingock_mongodb"
    hook_name = "Flamingock MongoDB audit store"
    ui_field_behaviour_name = "MONGODB_UI_FIELD_BEHAVIOUR"

    def __init__(
        self,
        flamingock_conn_id: str = FlamingockHook.default_conn_name,
        *,
        connection: Any = None,
        client: Any = None,
        require_database: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(flamingock_conn_id, connection=connection, **kwargs)
        self._client = client
        self._require_database = require_database

    @cached_property
    def settings(self) -> MongoSettings:
        return parse_settings(
            self.flamingock_conn_id, self.connection, require_database=self._require_database
        )

    def _secrets(self) -> tuple[str, ...]:
        password = (
            getattr(self.connection, "password", None) if "connection" in self.__dict__ else None
        )
        return (password, quote_plus(password)) if password else ()

    def _uri(self) -> str:
        """The connection string; it holds the password, so it never leaves this hook."""
        s, conn = self.settings, self.connection
        user = ""
        if conn.login:
            user = quote_plus(conn.login)
            if conn.password:
                user += ":" + quote_plus(conn.password)
            user += "@"
        return f"{s.scheme}://{user}{','.join(s.hosts)}/"

    def _client_options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {"tz_aware": True, "appname": "flamingock-airflow"}
        if s.tls is not None:
            options["tls"] = s.tls
        if s.auth_source:
            options["authSource"] = s.auth_source
        options.update(s.options)
        return options

    @cached_property
    def _conn(self) -> MongoClient[Any]:
        if self._client is not None:
            return self._client  # type: ignore[no-any-return]
        import pymongo

        try:
            return pymongo.MongoClient(self._uri(), **self._client_options())
        except pymongo.errors.ConfigurationError as err:
            detail = str(err)
            for secret in self._secrets():
                detail = detail.replace(secret, "***")
            raise ValidationError(
                f"Airflow connection '{self.flamingock_conn_id}': MongoDB refuses the "
                f"settings ({detail})"
            ) from None

    def get_conn(self) -> MongoClient[Any]:
        """The cached ``MongoClient`` (built on first call; closed with `__exit__`)."""
        return self._conn

    @cached_property
    def _store(self) -> MongoAuditStore:
        from flamingock_provider.stores.mongodb import MongoAuditStore

        s = self.settings
        return MongoAuditStore(
            self.get_conn(),
            s.database,
            audit_collection=s.audit_collection,
            lock_collection=s.lock_collection,
            auto_create=s.auto_create,
            read_concern=s.read_concern,
            write_concern=s.write_concern,
            read_preference=s.read_preference,
            lock_clock=s.lock_clock,
            cluster=s.cluster,
            location=s.location,
            owns_client=self._client is None,
            redact=self._secrets(),
        )

    def get_audit_store(self) -> MongoAuditStore:
        """The configured `MongoAuditStore`; closing it closes this hook's client."""
        return self._store

    def test_connection(self) -> tuple[bool, str]:
        """Run ``ping`` and report whether the audit collections exist; never raises."""
        try:
            store = self.get_audit_store()
            store.client.admin.command("ping")
            state = "present" if store.is_initialized() else "not created yet"
            return True, f"Connected to {store.description}; audit collections {state}."
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            for secret in self._secrets():
                message = message.replace(secret, "***")
            return False, message

    def close(self) -> None:
        """Close the store, or the client this hook built when no store was made."""
        if "_store" in self.__dict__:
            self._store.close()
        elif "_conn" in self.__dict__ and self._client is None:
            self._conn.close()
