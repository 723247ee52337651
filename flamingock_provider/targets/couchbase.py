"""CouchbaseTargetSystem: change units working on a Couchbase bucket, in ACID transactions.

A change gets ``cluster``, ``bucket`` and ``scope``, and ``transaction``: in a transactional
change the attempt context of a Couchbase transaction (``transaction.get/insert/replace/
remove``), which commits when ``apply`` returns and rolls back when it raises; None otherwise.

Same cluster, user and bucket as the audit store: `TX_SHARED`, the audit records are written in
the change's transaction. Otherwise `TX_SEPARATE_WITH_MARKER`: a marker document (collection
``flamingockMarker`` in the target scope) is inserted in the transaction; or
`TX_SEPARATE_NO_MARKER` with ``markers=False``.

The SDK runs a transaction as a callback (``transactions.run(logic)``) that it may call again
after a conflict; the engine runs a change inside a ``with`` block, which cannot run twice. So
the callback runs on a helper thread and lends its attempt context to the runner's thread for
one attempt; a retry the SDK asks for is refused, which rolls the transaction back and fails the
change (`FAILED`, applied again next run). No module here imports the SDK at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import TxStrategy
from flamingock_provider.engine.store import AuditStore

if TYPE_CHECKING:
    from flamingock_provider.stores._couchbase_cluster import ClusterHandle
    from flamingock_provider.stores.couchbase import CouchbaseAuditStore

DEFAULT_MARKER_COLLECTION = "flamingockMarker"
DEFAULT_TRANSACTION_TIMEOUT = timedelta(seconds=15)  # the SDK's own default expiry
JOIN_MARGIN = timedelta(seconds=120)


class CouchbaseTargetSystem:
    """A Couchbase bucket as a target system.

    :param id: the target system id changes refer to.
    :param conn_id: a ``flamingock_couchbase`` Airflow connection (its ``bucket``/``scope``
        extras are the defaults of the next two).
    :param bucket: the bucket changes work on.
    :param scope: the scope injected as ``scope`` (default ``_default``).
    :param cluster: an open cluster instead of ``conn_id`` (tests, scripts); the caller closes it.
    :param markers: keep marker documents so a crash mid-commit is resolved without a person.
    :param marker_collection: their collection, in ``scope``.
    :param auto_create: create the marker collection when missing.
    :param durability: of the transactions (``none``, ``majority``, ...; default: the
        connection's ``durability`` extra, else ``majority``).
    :param transaction_timeout: the transactions' expiry (timedelta or seconds; SDK default 15 s):
        a change must finish within it.
    """

    def __init__(
        self,
        id: str,
        conn_id: str | None = None,
        *,
        bucket: str | None = None,
        scope: str | None = None,
        cluster: Any = None,
        markers: bool = True,
        marker_collection: str = DEFAULT_MARKER_COLLECTION,
        auto_create: bool = True,
        durability: str | None = None,
        transaction_timeout: timedelta | float | None = None,
    ) -> None:
        if (conn_id is None) == (cluster is None):
            raise ValidationError(
                f"CouchbaseTargetSystem '{id}': pass exactly one of conn_id= or cluster="
            )
        if cluster is not None and not bucket:
            raise ValidationError(f"CouchbaseTargetSystem '{id}': with cluster=, pass bucket=")
        if transaction_timeout is not None and not isinstance(transaction_timeout, timedelta):
            try:
                transaction_timeout = timedelta(seconds=float(transaction_timeout))
            except (TypeError, ValueError):
                transaction_timeout = timedelta(0)
        if transaction_timeout is not None and transaction_timeout <= timedelta(0):
            raise ValidationError(
                f"CouchbaseTargetSystem '{id}': transaction_timeout must be a positive timedelta "
                "or number of seconds"
            )
        self._id = id
        self.conn_id = conn_id
        self.bucket = bucket
        self.scope = scope
        self.cluster = cluster
        self.markers = markers
        self.marker_collection = marker_collection
        self.auto_create = auto_create
        self.durability = durability
        self.transaction_timeout = transaction_timeout

    @property
    def id(self) -> str:
        return self._id

    def injectable_names(self) -> frozenset[str]:
        return frozenset({"cluster", "bucket", "scope", "transaction"})

    def open(self, store: AuditStore) -> _CouchbaseSession:
        from flamingock_provider.stores._couchbase_cluster import ClusterHandle, durability_option
        from flamingock_provider.stores.couchbase import CouchbaseAuditStore

        if self.cluster is not None:
            handle = ClusterHandle(self.cluster)
            bucket, scope, durability = self.bucket, self.scope, self.durability
        else:
            hook = self._hook()
            handle = hook.cluster_handle
            bucket = self.bucket or hook.bucket
            scope = self.scope or hook.scope
            durability = self.durability or hook.durability
        if not bucket:
            raise ValidationError(
                f"CouchbaseTargetSystem '{self.id}': no bucket; pass bucket= or set the "
                f"connection's 'bucket' extra"
            )
        durability_option(durability or "majority")  # a bad level fails before anything runs
        if isinstance(store, CouchbaseAuditStore) and store.shares_bucket_with(handle, bucket):
            return _CouchbaseSession(
                self, store.handle, bucket, scope, durability, owns=False, shared=store
            )
        return _CouchbaseSession(self, handle, bucket, scope, durability, owns=True, shared=None)

    def _hook(self) -> Any:
        from airflow.sdk import BaseHook

        from flamingock_provider.hooks import _not_found
        from flamingock_provider.hooks.couchbase import FlamingockCouchbaseHook

        assert self.conn_id is not None
        try:
            conn = BaseHook.get_connection(self.conn_id)
        except Exception as err:
            raise _not_found(self.conn_id, err) from err
        if conn.conn_type != FlamingockCouchbaseHook.conn_type:
            raise ValidationError(
                f"CouchbaseTargetSystem '{self.id}': Airflow connection '{self.conn_id}' has conn "
                f"type '{conn.conn_type}'; use a {FlamingockCouchbaseHook.conn_type} connection"
            )
        return FlamingockCouchbaseHook(self.conn_id, connection=conn)


class _CouchbaseTransaction:
    def __init__(self, session: _CouchbaseSession, context: Any) -> None:
        self.session = session
        self.context = context

    @property
    def injectables(self) -> Mapping[str, object]:
        return {**self.session.injectables(), "transaction": self.context}

    @property
    def audit_handle(self) -> object | None:
        shared = self.session.shared
        return shared.shared_transaction(self.context) if shared is not None else None

    def write_marker(self, change_id: str, execution_id: str) -> None:
        from flamingock_provider.engine.lock import utc_now

        if not self.session.target.markers:
            raise ValidationError("markers are switched off for this target system")
        body = {
            "changeId": change_id,
            "executionId": execution_id,
            "createdAt": int(utc_now().timestamp() * 1000),
        }
        from flamingock_provider.stores._couchbase_docs import marker_key

        self.context.insert(self.session.markers(), marker_key(change_id, execution_id), body)


class _CouchbaseSession:
    def __init__(
        self,
        target: CouchbaseTargetSystem,
        handle: ClusterHandle,
        bucket: str,
        scope: str | None,
        durability: str | None,
        *,
        owns: bool,
        shared: CouchbaseAuditStore | None,
    ) -> None:
        self.target = target
        self.handle = handle
        self.bucket_name = bucket
        self.scope_name = scope or "_default"
        self.durability = durability or "majority"
        self.owns = owns
        self.shared = shared
        self._marker_collection_exists: bool | None = None
        self._opened: tuple[Any, Any] | None = None

    def strategy(self, transactional: bool) -> TxStrategy:
        if not transactional:
            return TxStrategy.NON_TX
        if self.shared is not None:
            return TxStrategy.TX_SHARED
        if self.target.markers:
            return TxStrategy.TX_SEPARATE_WITH_MARKER
        return TxStrategy.TX_SEPARATE_NO_MARKER

    def _bucket(self) -> Any:
        cluster = self.handle.get()
        if self._opened is None or self._opened[0] is not cluster:
            self._opened = (cluster, cluster.bucket(self.bucket_name))  # a request: once
        return self._opened[1]

    def injectables(self) -> dict[str, object]:
        bucket = self._bucket()
        return {
            "cluster": self.handle.get(),
            "bucket": bucket,
            "scope": bucket.scope(self.scope_name),
        }

    def markers(self) -> Any:
        return self._bucket().scope(self.scope_name).collection(self.target.marker_collection)

    def prepare(self) -> None:
        from couchbase.exceptions import CollectionAlreadyExistsException, CouchbaseException

        if self.shared is not None or not self.target.markers:
            return
        where = (
            f"marker collection '{self.scope_name}.{self.target.marker_collection}' in bucket "
            f"'{self.bucket_name}'"
        )
        try:
            if self._has_marker_collection():
                return
            if not self.target.auto_create:
                raise ValidationError(
                    f"Target system '{self.target.id}': {where} does not exist and auto_create "
                    "is off; create it or pass markers=False"
                )
            with suppress(CollectionAlreadyExistsException):
                self._bucket().collections().create_collection(
                    self.scope_name, self.target.marker_collection
                )
        except CouchbaseException as err:
            raise ValidationError(
                f"Target system '{self.target.id}': cannot check or create the {where}: "
                f"{type(err).__name__}: {getattr(err, 'message', None) or err}"
            ) from err
        self._marker_collection_exists = True

    def _has_marker_collection(self) -> bool:
        if self._marker_collection_exists is None:
            manager = self._bucket().collections()
            self._marker_collection_exists = any(
                scope.name == self.scope_name
                and any(c.name == self.target.marker_collection for c in scope.collections)
                for scope in manager.get_all_scopes()
            )
        return self._marker_collection_exists

    @contextmanager
    def resources(self) -> Iterator[Mapping[str, object]]:
        # ``transaction`` is None outside a transaction rather than missing: a change that
        # asks for it then fails in its own code, before writing, not in the runner.
        yield {**self.injectables(), "transaction": None}

    @contextmanager
    def transaction(self) -> Iterator[_CouchbaseTransaction]:
        attempt = _LentAttempt(self.handle.get(), self._options(), self._join_timeout())
        context = attempt.begin()
        try:
            yield _CouchbaseTransaction(self, context)
        except BaseException:
            attempt.end(commit=False)
            raise
        attempt.end(commit=True)

    def _join_timeout(self) -> float:
        expiry = self.target.transaction_timeout or DEFAULT_TRANSACTION_TIMEOUT
        return (expiry + JOIN_MARGIN).total_seconds()

    def _options(self) -> Any:
        from couchbase.durability import DurabilityLevel, ServerDurability
        from couchbase.options import TransactionOptions

        from flamingock_provider.stores._couchbase_cluster import durability_option

        durability = durability_option(self.durability) or ServerDurability(DurabilityLevel.NONE)
        if self.target.transaction_timeout is None:
            return TransactionOptions(durability=durability)
        return TransactionOptions(durability=durability, timeout=self.target.transaction_timeout)

    def has_marker(self, change_id: str, execution_id: str) -> bool:
        from couchbase.exceptions import DocumentNotFoundException

        from flamingock_provider.stores._couchbase_docs import marker_key

        if not self._has_marker_collection():
            return False
        try:
            self.markers().get(marker_key(change_id, execution_id))
        except DocumentNotFoundException:
            return False
        return True

    def clear_marker(self, change_id: str, execution_id: str) -> None:
        from couchbase.exceptions import DocumentNotFoundException

        from flamingock_provider.stores._couchbase_docs import marker_key

        with suppress(DocumentNotFoundException):
            self.markers().remove(marker_key(change_id, execution_id))

    def close(self) -> None:
        if self.owns:
            self.handle.close()


class _RetryRefused(Exception):
    """Raised inside the SDK's transaction callback when it is called for a second attempt."""


class _RolledBack(Exception):
    """Raised inside the SDK's transaction callback to roll the attempt back."""


class _LentAttempt:
    """``cluster.transactions.run`` on a helper thread, its attempt context lent to the caller.

    `begin` returns the attempt context once the SDK calls the logic; the caller works with it;
    `end` tells the logic to return (commit) or raise (roll back) and waits for the SDK.
    """

    def __init__(self, cluster: Any, options: Any, join_timeout: float) -> None:
        self._cluster = cluster
        self._options = options
        self._join_timeout = join_timeout
        self._lent = threading.Event()
        self._decided = threading.Event()
        self._commit = False
        self._calls = 0
        self._context: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="flamingock-couchbase-transaction", daemon=True
        )

    def begin(self) -> Any:
        self._thread.start()
        if not self._lent.wait(self._join_timeout):
            raise TimeoutError(
                f"the Couchbase transaction did not start within {self._join_timeout:.0f}s"
            )
        if self._context is None:  # run() failed before calling the logic
            self._thread.join(self._join_timeout)
            raise self._error or RuntimeError("the Couchbase transaction did not start")
        return self._context

    def end(self, commit: bool) -> None:
        self._commit = commit
        self._decided.set()
        self._thread.join(self._join_timeout)
        if self._thread.is_alive():
            raise TimeoutError(
                f"the Couchbase transaction did not finish within {self._join_timeout:.0f}s; "
                "its outcome is unknown"
            )
        if commit and self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self._cluster.transactions.run(self._logic, self._options)
        except BaseException as err:
            self._error = err
        finally:
            self._lent.set()

    def _logic(self, context: Any) -> None:
        self._calls += 1
        if self._calls > 1:
            raise _RetryRefused(
                "Couchbase asked to run the transaction again (write conflict or failed "
                "commit); a change is run once per attempt, so this attempt is rolled back"
            )
        self._context = context
        self._lent.set()
        self._decided.wait()
        if not self._commit:
            raise _RolledBack("the change raised; rolling back")
