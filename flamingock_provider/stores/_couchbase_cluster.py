"""Opening Couchbase clusters: connection settings, a lazily opened shared cluster, durability.

Shared by the Couchbase audit store, `FlamingockCouchbaseHook` and `CouchbaseTargetSystem`. The
SDK is imported inside the functions that need it, so reading settings costs no import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flamingock_provider.engine.errors import ValidationError

SCHEMES = ("couchbase", "couchbases")
DURABILITY_LEVELS = {
    "none": None,
    "majority": "MAJORITY",
    "majority_and_persist_active": "MAJORITY_AND_PERSIST_TO_ACTIVE",
    "persist_to_majority": "PERSIST_TO_MAJORITY",
}
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)


def durability_option(name: str) -> Any:
    """The SDK's ``ServerDurability`` for a level name, or None for ``none``.

    :raises ValidationError: an unknown level name.
    """
    key = str(name).strip().lower()
    if key not in DURABILITY_LEVELS:
        raise ValidationError(
            f"Couchbase durability '{name}' is unknown; use one of {', '.join(DURABILITY_LEVELS)}"
        )
    level = DURABILITY_LEVELS[key]
    if level is None:
        return None
    from couchbase.durability import DurabilityLevel, ServerDurability

    return ServerDurability(DurabilityLevel[level])


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


@dataclass(frozen=True)
class ClusterSettings:
    """How to reach a cluster. The password is kept out of ``repr`` and every message.

    :param connection_string: ``couchbase://host1,host2`` or ``couchbases://…`` (TLS).
    :param cert_path: CA certificate (trust store) for ``couchbases://`` with a private CA.
    :param connect_timeout: bound on bootstrapping the connection.
    """

    connection_string: str
    username: str
    password: str = field(repr=False)
    cert_path: str | None = None
    connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        parts = urlsplit(self.connection_string)
        if parts.scheme not in SCHEMES or not parts.netloc:
            raise ValidationError(
                f"Couchbase connection string '{self.location}' must start with couchbase:// "
                "or couchbases:// and name at least one host"
            )

    @property
    def location(self) -> str:
        """The connection string without credentials or parameters, for messages."""
        parts = urlsplit(self.connection_string)
        hosts = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{hosts}" if parts.scheme else hosts

    @property
    def identity(self) -> Hashable:
        """What makes two settings the same cluster seen by the same user."""
        parts = urlsplit(self.connection_string)
        hosts = parts.netloc.rpartition("@")[2].lower().split(",")
        return ("connstr", tuple(sorted(h.strip() for h in hosts)), self.username)

    def open(self, timeout: timedelta | None = None) -> Any:
        """Connect, blocking at most ``timeout`` (default: ``connect_timeout``); a ``Cluster``."""
        from couchbase.auth import PasswordAuthenticator
        from couchbase.cluster import Cluster
        from couchbase.options import ClusterOptions, ClusterTimeoutOptions

        bound = timeout or self.connect_timeout
        authenticator = (
            PasswordAuthenticator(self.username, self.password, cert_path=self.cert_path)
            if self.cert_path
            else PasswordAuthenticator(self.username, self.password)
        )
        timeouts = ClusterTimeoutOptions(connect_timeout=bound, bootstrap_timeout=bound)
        return Cluster(
            self.connection_string, ClusterOptions(authenticator, timeout_options=timeouts)
        )

    def handle(self) -> ClusterHandle:
        """A `ClusterHandle` that connects on first use and owns the connection."""
        return ClusterHandle(
            opener=self.open, location=self.location, identity=self.identity, secret=self.password
        )


class ClusterHandle:
    """One cluster connection, opened on first use and closed once; shared by a hook, its store
    and the target systems on the same connection.

    :param cluster: an already open cluster (the caller keeps and closes it), or
    :param opener: a function that opens one (this handle then owns and closes it).
    :param location: how messages name the cluster (no secret).
    :param identity: equal for two handles on the same cluster and user (default: the object).
    :param secret: scrubbed from error messages.
    """

    def __init__(
        self,
        cluster: Any = None,
        *,
        opener: Callable[[], Any] | None = None,
        location: str | None = None,
        identity: Hashable | None = None,
        secret: str | None = None,
    ) -> None:
        if (cluster is None) == (opener is None):
            raise ValueError("pass exactly one of cluster= or opener=")
        self._cluster = cluster
        self._opener = opener
        self.owned = opener is not None
        self.location = location or f"<{type(cluster).__name__} given by the caller>"
        self.identity: Hashable = identity if identity is not None else ("object", id(cluster))
        self.secret = secret
        self._mutex = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._cluster is not None

    def get(self) -> Any:
        """The cluster, connecting now if needed (thread-safe: one connection)."""
        with self._mutex:
            if self._cluster is None:
                assert self._opener is not None
                self._cluster = self._opener()
            return self._cluster

    def close(self) -> None:
        """Close the connection if this handle opened it; a later `get` connects again."""
        with self._mutex:
            cluster = self._cluster
            if not self.owned or cluster is None:
                return
            self._cluster = None
        cluster.close()
