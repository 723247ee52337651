"""MongoDBTargetSystem: a MongoDB database, changed through the injected `db`, `client`, `session`.

Same deployment and user as a MongoDB audit store: `TX_SHARED` — the change uses the store's
client, and `STARTED`/`APPLIED` are written with the change's own session, in its transaction.
Elsewhere: `TX_SEPARATE_WITH_MARKER` — a marker document commits with the change (or
`TX_SEPARATE_NO_MARKER` with ``markers=False``). A transactional change needs a replica set or a
sharded cluster: against a standalone server it is refused, before its `STARTED` is written.

Change code must pass ``session=session`` to every operation that belongs to the transaction;
pymongo offers no way to bind a database to a session. Non-transactional changes get
``session=None``, so the same code runs either way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import TxStrategy
from flamingock_provider.engine.store import AuditStore

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.client_session import ClientSession
    from pymongo.collection import Collection
    from pymongo.database import Database

log = logging.getLogger(__name__)
COMMIT_ATTEMPTS = 3


class MongoDBTargetSystem:
    """A MongoDB database as a target system.

    :param id: the target system id changes refer to.
    :param conn_id: an Airflow connection read like a ``flamingock_mongodb`` one (host, port,
        login, password, schema; extras ``srv``, ``tls``, ``auth_source``, ``options``).
    :param database: the database changes work on; default: the connection's schema.
    :param client: a ready ``MongoClient`` instead of ``conn_id`` (tests, scripts); not closed.
    :param markers: keep a marker collection so a crash mid-commit is resolved without a person.
    :param marker_collection: its name, in ``database``.
    :param auto_create: create the marker collection when missing.
    """

    def __init__(
        self,
        id: str,
        conn_id: str | None = None,
        *,
        database: str | None = None,
        client: Any = None,
        markers: bool = True,
        marker_collection: str = "flamingockMarker",
        auto_create: bool = True,
    ) -> None:
        if (conn_id is None) == (client is None):
            raise ValidationError(
                f"MongoDBTargetSystem '{id}': pass exactly one of conn_id= or client="
            )
        if client is not None and not database:
            raise ValidationError(f"MongoDBTargetSystem '{id}': with client=, pass database=")
        self._id = id
        self.conn_id = conn_id
        self.database = database
        self.client = client
        self.markers = markers
        self.marker_collection = marker_collection
        self.auto_create = auto_create

    @property
    def id(self) -> str:
        return self._id

    def injectable_names(self) -> frozenset[str]:
        return frozenset({"db", "client", "session"})

    def open(self, store: AuditStore) -> _MongoSession:
        """Share the audit store's client when it is the same deployment and user."""
        from flamingock_provider.stores.mongodb import MongoAuditStore

        audit = store if isinstance(store, MongoAuditStore) else None
        if self.client is not None:
            assert self.database is not None
            shared = audit is not None and audit.shares_client_with(self.client)
            return _MongoSession(self, self.client, self.database, shared=shared, owns=False)
        hook = self._hook()
        database = self.database or hook.settings.database
        if not database:
            raise ValidationError(
                f"MongoDBTargetSystem '{self.id}': connection '{self.conn_id}' names no "
                "database (schema); pass database="
            )
        if (
            audit is not None
            and audit.cluster is not None
            and audit.cluster == hook.settings.cluster
        ):
            return _MongoSession(self, audit.client, database, shared=True, owns=False)
        return _MongoSession(self, hook.get_conn(), database, shared=False, owns=True)

    def _hook(self) -> Any:
        from airflow.sdk import BaseHook

        from flamingock_provider.hooks import _not_found
        from flamingock_provider.hooks.mongodb import FlamingockMongoDBHook

        assert self.conn_id is not None
        try:
            conn = BaseHook.get_connection(self.conn_id)
        except Exception as err:
            raise _not_found(self.conn_id, err) from err
        return FlamingockMongoDBHook(self.conn_id, connection=conn, require_database=False)


class _MongoTransaction:
    def __init__(self, session: _MongoSession, client_session: ClientSession) -> None:
        self._owner = session
        self.session = client_session

    @property
    def injectables(self) -> Mapping[str, object]:
        return {"db": self._owner.db, "client": self._owner.client, "session": self.session}

    @property
    def audit_handle(self) -> object | None:
        return self.session if self._owner.shared else None

    def write_marker(self, change_id: str, execution_id: str) -> None:
        from flamingock_provider.engine.lock import utc_now

        if not self._owner.target.markers:
            raise ValidationError("markers are switched off for this target system")
        marker = {
            "_id": _marker_id(change_id, execution_id),
            "changeId": change_id,
            "executionId": execution_id,
            "createdAt": utc_now(),
        }
        self._owner.markers.insert_one(marker, session=self.session)


class _MongoSession:
    def __init__(
        self,
        target: MongoDBTargetSystem,
        client: MongoClient[Any],
        database: str,
        *,
        shared: bool,
        owns: bool,
    ) -> None:
        self.target = target
        self.client = client
        self.db: Database[Any] = client.get_database(database)
        self.shared = shared
        self.owns = owns
        self._transactions: bool | None = None

    @property
    def markers(self) -> Collection[Any]:
        from pymongo.read_concern import ReadConcern
        from pymongo.write_concern import WriteConcern

        return self.db.get_collection(
            self.target.marker_collection,
            read_concern=ReadConcern("majority"),
            write_concern=WriteConcern("majority", j=True),
        )

    def strategy(self, transactional: bool) -> TxStrategy:
        if not transactional:
            return TxStrategy.NON_TX
        if not self.supports_transactions():
            raise ValidationError(
                f"Target system '{self.target.id}' is a standalone MongoDB server (its 'hello' "
                "reply names no replica set), which has no transactions: a transactional change "
                "cannot run on it. Run it as a replica set (one member is enough: mongod "
                "--replSet rs0, then rs.initiate()), or declare the change transactional=False."
            )
        if self.shared:
            return TxStrategy.TX_SHARED
        if self.target.markers:
            return TxStrategy.TX_SEPARATE_WITH_MARKER
        return TxStrategy.TX_SEPARATE_NO_MARKER

    def supports_transactions(self) -> bool:
        """A replica set member or a mongos answers ``hello`` with ``setName`` / ``isdbgrid``."""
        if self._transactions is None:
            from pymongo.errors import OperationFailure

            try:
                reply = self.client.admin.command("hello")
            except OperationFailure:  # servers before 4.4.2 know only the legacy name
                reply = self.client.admin.command("isMaster")
            self._transactions = bool(reply.get("setName")) or reply.get("msg") == "isdbgrid"
        return self._transactions

    def prepare(self) -> None:
        if self.shared or not self.target.markers:
            return
        name = self.target.marker_collection
        if name in self.db.list_collection_names(filter={"name": name}):
            return
        if not self.target.auto_create:
            raise ValidationError(
                f"Target system '{self.target.id}': marker collection '{name}' does not exist "
                "and auto_create is off; create it or pass markers=False"
            )
        from pymongo.errors import CollectionInvalid

        with contextlib.suppress(CollectionInvalid):  # another runner created it meanwhile
            self.db.create_collection(name)

    @contextmanager
    def resources(self) -> Iterator[Mapping[str, object]]:
        yield {"db": self.db, "client": self.client, "session": None}

    @contextmanager
    def transaction(self) -> Iterator[_MongoTransaction]:
        """Commit when the block ends (retrying an unknown commit result), abort when it raises.

        Not ``with_transaction``: its retry would re-run the change and the runner's audit
        writes inside one step. A transient error fails the step instead; the change is
        recorded FAILED under a transactional strategy and applied again on the next run.
        """
        from pymongo import ReadPreference
        from pymongo.read_concern import ReadConcern
        from pymongo.write_concern import WriteConcern

        with self.client.start_session() as session:
            session.start_transaction(
                read_concern=ReadConcern("majority"),
                write_concern=WriteConcern("majority", j=True),
                read_preference=ReadPreference.PRIMARY,
            )
            try:
                yield _MongoTransaction(self, session)
            except BaseException:
                if session.in_transaction:
                    try:
                        session.abort_transaction()
                    except Exception as err:  # the change's own error matters more
                        log.warning("Aborting the transaction failed: %s", err)
                raise
            _commit(session)

    def has_marker(self, change_id: str, execution_id: str) -> bool:
        if self.shared or not self.target.markers:
            return False
        return self.markers.find_one({"_id": _marker_id(change_id, execution_id)}) is not None

    def clear_marker(self, change_id: str, execution_id: str) -> None:
        self.markers.delete_one({"_id": _marker_id(change_id, execution_id)})

    def close(self) -> None:
        if self.owns:
            self.client.close()


def _commit(session: ClientSession) -> None:
    from pymongo.errors import PyMongoError

    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            session.commit_transaction()
            return
        except PyMongoError as err:
            if attempt < COMMIT_ATTEMPTS and err.has_error_label("UnknownTransactionCommitResult"):
                continue  # committing again is safe: the server answers with the first outcome
            raise


def _marker_id(change_id: str, execution_id: str) -> str:
    return f"{change_id}@{execution_id}"
