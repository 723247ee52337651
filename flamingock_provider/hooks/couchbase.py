"""FlamingockCouchbaseHook: an Airflow connection of type ``flamingock_couchbase`` -> a cluster
and a Couchbase audit store.

Host is the connection string (``couchbase://cb1,cb2`` or ``couchbases://…`` for TLS), login and
password the cluster user; extras ``bucket`` (required for the audit store), ``scope``,
``audit_collection``, ``lock_collection``, ``auto_create``, ``durability``, ``cert_path`` and
``connect_timeout``. The SDK is imported only when a cluster is opened; the password never
appears in a description or an error.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.hooks._base import FlamingockHook
from flamingock_provider.hooks._extras import as_bool

if TYPE_CHECKING:
    from flamingock_provider.stores._couchbase_cluster import ClusterHandle, ClusterSettings
    from flamingock_provider.stores.couchbase import CouchbaseAuditStore

DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
TEST_CONNECTION_TIMEOUT_SECONDS = 5.0


class FlamingockCouchbaseHook(FlamingockHook):
    """Connect to a Couchbase cluster holding a Flamingock audit store.

    :param flamingock_conn_id: the Airflow connection id (conn type ``flamingock_couchbase``).
    :param connection: an already fetched Airflow connection (no lookup then).
    :param cluster: an open cluster to use instead of connecting (tests, the in-memory fake of
        `flamingock_provider.testing_couchbase`); the caller keeps and closes it.
    """

    conn_type = "flamingock_couchbase"
    hook_name = "Flamingock Couchbase audit store"
    ui_field_behaviour_name = "COUCHBASE_UI_FIELD_BEHAVIOUR"

    def __init__(
        self,
        flamingock_conn_id: str = FlamingockHook.default_conn_name,
        *,
        connection: Any = None,
        cluster: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(flamingock_conn_id, connection=connection, **kwargs)
        self._cluster = cluster

    def _fail(self, what: str) -> ValidationError:
        return ValidationError(f"Airflow connection '{self.flamingock_conn_id}': {what}")

    @cached_property
    def settings(self) -> ClusterSettings:
        """Connection string, user, password, TLS certificate and connect timeout."""
        from flamingock_provider.stores._couchbase_cluster import ClusterSettings

        conn = self.connection
        host = str(conn.host or "").strip()
        if not host:
            raise self._fail(
                "set the host to the connection string, e.g. couchbases://cb.example.com"
            )
        if "://" not in host:
            host = f"couchbase://{host}"
        if not conn.login:
            raise self._fail("set the login (the Couchbase user)")
        timeout = self.extras.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT_SECONDS)
        try:
            seconds = float(timeout)
        except (TypeError, ValueError):
            seconds = -1.0
        if seconds <= 0:
            raise self._fail(f"extra 'connect_timeout' must be a positive number, got {timeout!r}")
        try:
            return ClusterSettings(
                connection_string=host,
                username=str(conn.login),
                password=str(conn.password or ""),
                cert_path=str(self.extras["cert_path"]) if self.extras.get("cert_path") else None,
                connect_timeout=timedelta(seconds=seconds),
            )
        except ValidationError as err:
            raise self._fail(str(err)) from None

    @cached_property
    def cluster_handle(self) -> ClusterHandle:
        """The cluster of this hook, opened on first use and shared with its audit store."""
        if self._cluster is not None:
            from flamingock_provider.stores._couchbase_cluster import ClusterHandle

            return ClusterHandle(self._cluster)
        return self.settings.handle()

    @property
    def bucket(self) -> str | None:
        return str(self.extras["bucket"]) if self.extras.get("bucket") else None

    @property
    def scope(self) -> str:
        return str(self.extras.get("scope") or "_default")

    @property
    def durability(self) -> str:
        return str(self.extras.get("durability") or "majority")

    def get_conn(self) -> Any:
        """The SDK ``Cluster`` (connected on first call, cached, closed by ``__exit__``)."""
        return self.cluster_handle.get()

    @cached_property
    def _store(self) -> CouchbaseAuditStore:
        from flamingock_provider.stores.couchbase import (
            DEFAULT_AUDIT_COLLECTION,
            DEFAULT_LOCK_COLLECTION,
            CouchbaseAuditStore,
        )

        extras, conn_id = self.extras, self.flamingock_conn_id
        if not self.bucket:
            raise self._fail("extra 'bucket' is required: the bucket holding the audit store")
        try:
            return CouchbaseAuditStore(
                self.cluster_handle,
                bucket=self.bucket,
                scope=self.scope,
                audit_collection=str(extras.get("audit_collection") or DEFAULT_AUDIT_COLLECTION),
                lock_collection=str(extras.get("lock_collection") or DEFAULT_LOCK_COLLECTION),
                auto_create=as_bool(conn_id, "auto_create", extras.get("auto_create"), True),
                durability=self.durability,
            )
        except ValidationError as err:
            raise self._fail(str(err)) from None

    def get_audit_store(self) -> CouchbaseAuditStore:
        """The configured `CouchbaseAuditStore` (collections created or checked on first run)."""
        return self._store

    def test_connection(self) -> tuple[bool, str]:
        """Connect (at most 5 s), wait for the data service, list the bucket's collections.

        Never raises and never hangs: any failure is returned as ``(False, reason)``.
        """
        cluster, step = None, "read the connection"
        try:
            store = self.get_audit_store()
            probe = store
            if self._cluster is None:
                from flamingock_provider.stores.couchbase import CouchbaseAuditStore

                seconds = min(
                    self.settings.connect_timeout.total_seconds(), TEST_CONNECTION_TIMEOUT_SECONDS
                )
                bound = timedelta(seconds=seconds)
                step = f"connect to {self.settings.location} within {seconds:g}s"
                cluster = self.settings.open(timeout=bound)
                step = f"reach the data service of {self.settings.location}"
                from couchbase.diagnostics import ServiceType

                cluster.wait_until_ready(bound, service_types=[ServiceType.KeyValue])
                probe = CouchbaseAuditStore(
                    cluster,
                    bucket=store.bucket_name,
                    scope=store.scope_name,
                    audit_collection=store.audit_collection_name,
                    lock_collection=store.lock_collection_name,
                )
            step = "list the bucket's collections"
            state = "present" if probe.is_initialized() else "not created yet"
            return True, f"Connected to {store.description}; audit collections {state}."
        except Exception as err:
            detail = getattr(err, "message", None) or str(err)
            message = f"Could not {step}: {type(err).__name__}: {detail}"
            password = (
                getattr(self.connection, "password", None)
                if "connection" in self.__dict__
                else None
            )
            return False, message.replace(password, "***") if password else message
        finally:
            if cluster is not None:
                try:
                    cluster.close()
                except Exception as err:  # closing a probe must not change the verdict
                    self.log.debug("closing the test cluster failed: %s", err)

    def close(self) -> None:
        """Close the cluster if this hook opened it."""
        if "cluster_handle" in self.__dict__:
            self.cluster_handle.close()
