"""SqlTargetSystem: a SQL database changed through a SQLAlchemy ``connection``.

Same database as the audit store: `TX_SHARED`, the audit records join the change's transaction.
Another database: `TX_SEPARATE_WITH_MARKER`, a row in the marker table commits with the change
(or `TX_SEPARATE_NO_MARKER` with ``markers=False``). Non-transactional changes get a connection
in autocommit mode: each statement stands on its own, as the `NON_TX` record says.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import TxStrategy
from flamingock_provider.engine.store import AuditStore

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table


class SqlTargetSystem:
    """A SQL database as a target system.

    :param id: the target system id changes refer to.
    :param conn_id: an Airflow connection: a ``flamingock_sql`` one, or any connection whose
        hook offers a SQLAlchemy URL (postgres, mysql, sqlite providers).
    :param url: a SQLAlchemy URL instead of ``conn_id`` (tests, scripts outside Airflow).
    :param markers: keep a marker table so a crash mid-commit is resolved without a person.
    :param marker_table: its name, in the target database.
    :param auto_create: create the marker table when missing.
    """

    def __init__(
        self,
        id: str,
        conn_id: str | None = None,
        *,
        url: str | None = None,
        markers: bool = True,
        marker_table: str = "flamingockMarker",
        auto_create: bool = True,
    ) -> None:
        if (conn_id is None) == (url is None):
            raise ValidationError(f"SqlTargetSystem '{id}': pass exactly one of conn_id= or url=")
        self._id = id
        self.conn_id = conn_id
        self.url = url
        self.markers = markers
        self.marker_table = marker_table
        self.auto_create = auto_create

    @property
    def id(self) -> str:
        return self._id

    def injectable_names(self) -> frozenset[str]:
        return frozenset({"connection", "engine"})

    def open(self, store: AuditStore) -> _SqlSession:
        from flamingock_provider.stores.sql import SqlAuditStore

        url = self._resolve_url()
        if isinstance(store, SqlAuditStore) and store.same_database(url):
            return _SqlSession(self, store.engine, shared=True, owns_engine=False)
        from flamingock_provider.stores._sqlschema import build_engine

        return _SqlSession(self, build_engine(url), shared=False, owns_engine=True)

    def _resolve_url(self) -> Any:
        if self.url is not None:
            return self.url
        from flamingock_provider.hooks.sql import sqlalchemy_url_for

        assert self.conn_id is not None
        return sqlalchemy_url_for(self.conn_id)


class _SqlTransaction:
    def __init__(self, conn: Connection, shared: bool, markers: Table | None) -> None:
        self.conn = conn
        self.shared = shared
        self.markers = markers

    @property
    def injectables(self) -> Mapping[str, object]:
        return {"connection": self.conn, "engine": self.conn.engine}

    @property
    def audit_handle(self) -> object | None:
        return self.conn if self.shared else None

    def write_marker(self, change_id: str, execution_id: str) -> None:
        from sqlalchemy import insert

        from flamingock_provider.engine.lock import utc_now

        if self.markers is None:
            raise ValidationError("markers are switched off for this target system")
        row = {"change_id": change_id, "execution_id": execution_id, "created_at": utc_now()}
        self.conn.execute(insert(self.markers).values(**row))


class _SqlSession:
    def __init__(
        self, target: SqlTargetSystem, engine: Engine, *, shared: bool, owns_engine: bool
    ) -> None:
        from sqlalchemy import MetaData

        from flamingock_provider.stores._sqlschema import marker_table

        self.target = target
        self.engine = engine
        self.shared = shared
        self.owns_engine = owns_engine
        self.marker_table = marker_table(MetaData(), target.marker_table)
        self._marker_table_exists: bool | None = None

    def strategy(self, transactional: bool) -> TxStrategy:
        if not transactional:
            return TxStrategy.NON_TX
        if self.shared:
            return TxStrategy.TX_SHARED
        if self.target.markers:
            return TxStrategy.TX_SEPARATE_WITH_MARKER
        return TxStrategy.TX_SEPARATE_NO_MARKER

    def prepare(self) -> None:
        if self.shared or not self.target.markers:
            return
        if self._has_marker_table():
            return
        if not self.target.auto_create:
            raise ValidationError(
                f"Target system '{self.target.id}': marker table '{self.target.marker_table}' "
                "does not exist and auto_create is off; create it or pass markers=False"
            )
        self.marker_table.create(self.engine, checkfirst=True)
        self._marker_table_exists = True

    def _has_marker_table(self) -> bool:
        if self._marker_table_exists is None:
            from sqlalchemy import inspect

            self._marker_table_exists = inspect(self.engine).has_table(self.marker_table.name)
        return self._marker_table_exists

    @contextmanager
    def resources(self) -> Iterator[Mapping[str, object]]:
        with self.engine.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield {"connection": auto, "engine": self.engine}

    @contextmanager
    def transaction(self) -> Iterator[_SqlTransaction]:
        markers = self.marker_table if self.target.markers and not self.shared else None
        with self.engine.connect() as conn, conn.begin():
            yield _SqlTransaction(conn, self.shared, markers)

    def has_marker(self, change_id: str, execution_id: str) -> bool:
        from sqlalchemy import select

        if not self._has_marker_table():
            return False
        m = self.marker_table
        query = select(m.c.change_id).where(
            m.c.change_id == change_id, m.c.execution_id == execution_id
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def clear_marker(self, change_id: str, execution_id: str) -> None:
        from sqlalchemy import delete

        m = self.marker_table
        statement = delete(m).where(m.c.change_id == change_id, m.c.execution_id == execution_id)
        with self.engine.begin() as conn:
            conn.execute(statement)

    def close(self) -> None:
        if self.owns_engine:
            self.engine.dispose()
