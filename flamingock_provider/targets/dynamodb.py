"""DynamoDBTargetSystem: DynamoDB tables changed through ``client`` and ``transaction``.

``client`` is a boto3 DynamoDB client. ``transaction`` collects ``TransactWriteItems``
operations (`DynamoDBTransaction`: ``put``/``update``/``delete``/``condition_check``) that are
committed atomically after ``apply`` returns; nothing is written when ``apply`` raises.
Import its type for annotations from here: ``from flamingock_provider.targets.dynamodb import
DynamoDBTransaction``.

Same endpoint, region and account as a DynamoDB audit store: `TX_SHARED`, the ``STARTED`` and
``APPLIED`` records join the change's ``TransactWriteItems``. Elsewhere:
`TX_SEPARATE_WITH_MARKER`, an item in the target's marker table joins it instead (or
`TX_SEPARATE_NO_MARKER` with ``markers=False``). Non-transactional changes get a collector too;
it is committed after ``apply`` returns, and the audit records are written on their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import TxStrategy
from flamingock_provider.engine.store import AuditStore

if TYPE_CHECKING:
    from flamingock_provider.stores._dynamodb import ClientSettings
    from flamingock_provider.stores._dynamodb_transaction import (
        DynamoDBTransaction,
        DynamoDBTransactionError,
    )

__all__ = ["DynamoDBTargetSystem", "DynamoDBTransaction", "DynamoDBTransactionError"]

SHARED_RESERVE = 3
"""Operations kept for the audit in a `TX_SHARED` transaction: two history puts, one latest."""
MARKER_RESERVE = 1


class DynamoDBTargetSystem:
    """DynamoDB as a target system.

    :param id: the target system id changes refer to.
    :param conn_id: an Airflow connection (``flamingock_dynamodb``, or the Amazon provider's
        ``aws``): login/password = access key, extras ``region_name``, ``endpoint_url``,
        ``aws_session_token``.
    :param region_name: instead of ``conn_id`` (tests, scripts outside Airflow), with
        ``endpoint_url``, ``aws_access_key_id``, ``aws_secret_access_key``,
        ``aws_session_token``; all optional (boto3's defaults).
    :param markers: keep a marker table so a crash mid-commit is resolved without a person.
    :param marker_table: its name, in the target's account and region.
    :param auto_create: create the marker table (PAY_PER_REQUEST) when missing.
    """

    def __init__(
        self,
        id: str,
        conn_id: str | None = None,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        markers: bool = True,
        marker_table: str = "flamingockMarker",
        auto_create: bool = True,
    ) -> None:
        explicit = {
            "region_name": region_name,
            "endpoint_url": endpoint_url,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        if conn_id is not None and any(v is not None for v in explicit.values()):
            raise ValidationError(
                f"DynamoDBTargetSystem '{id}': pass conn_id= or client settings, not both"
            )
        self._id = id
        self.conn_id = conn_id
        self._explicit: dict[str, Any] = {k: v for k, v in explicit.items() if v is not None}
        self.markers = markers
        self.marker_table = marker_table
        self.auto_create = auto_create

    @property
    def id(self) -> str:
        return self._id

    def __repr__(self) -> str:  # the settings hold secrets: show only what is safe
        where = f"conn_id={self.conn_id!r}" if self.conn_id else "explicit settings"
        return f"DynamoDBTargetSystem({self._id!r}, {where})"

    def injectable_names(self) -> frozenset[str]:
        return frozenset({"client", "transaction"})

    def settings(self) -> ClientSettings:
        """The client settings, read from the connection when ``conn_id`` is given."""
        from flamingock_provider.stores._dynamodb import ClientSettings

        if self.conn_id is None:
            return ClientSettings(**self._explicit)
        from flamingock_provider.hooks.dynamodb import client_options_for

        return ClientSettings(**client_options_for(self.conn_id))

    def open(self, store: AuditStore) -> _DynamoDBSession:
        from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

        settings = self.settings()
        if isinstance(store, DynamoDBAuditStore) and store.identity == settings.identity():
            return _DynamoDBSession(self, store.client, store.identity, shared=True, owns=False)
        return _DynamoDBSession(
            self, settings.client(), settings.identity(), shared=False, owns=True
        )


class _DynamoDBTransactionScope:
    """The runner's view of one change transaction (`TargetTransaction`)."""

    def __init__(self, collector: DynamoDBTransaction, client: Any, shared: bool) -> None:
        self.collector = collector
        self.client = client
        self.shared = shared
        self.markers: str | None = None

    @property
    def injectables(self) -> Mapping[str, object]:
        return {"client": self.client, "transaction": self.collector}

    @property
    def audit_handle(self) -> object | None:
        return self.collector if self.shared else None

    def write_marker(self, change_id: str, execution_id: str) -> None:
        from flamingock_provider.engine.lock import utc_now
        from flamingock_provider.stores._dynamodb import to_epoch_millis

        if self.markers is None:
            raise ValidationError("markers are switched off for this target system")
        item = {
            "changeId": {"S": change_id},
            "executionId": {"S": execution_id},
            "createdAt": {"N": to_epoch_millis(utc_now())},
        }
        self.collector.add_reserved({"Put": {"TableName": self.markers, "Item": item}})


class _DynamoDBSession:
    def __init__(
        self,
        target: DynamoDBTargetSystem,
        client: Any,
        identity: tuple[str, str, str],
        *,
        shared: bool,
        owns: bool,
    ) -> None:
        self.target = target
        self.client = client
        self.identity = identity
        self.shared = shared
        self.owns = owns

    @property
    def _markers_on(self) -> bool:
        return self.target.markers and not self.shared

    def strategy(self, transactional: bool) -> TxStrategy:
        if not transactional:
            return TxStrategy.NON_TX
        if self.shared:
            return TxStrategy.TX_SHARED
        if self.target.markers:
            return TxStrategy.TX_SEPARATE_WITH_MARKER
        return TxStrategy.TX_SEPARATE_NO_MARKER

    def prepare(self) -> None:
        from flamingock_provider.stores._dynamodb import TableSpec, ensure_table

        if not self._markers_on:
            return
        spec = TableSpec(
            self.target.marker_table, (("changeId", "HASH", "S"), ("executionId", "RANGE", "S"))
        )
        problem = ensure_table(self.client, spec, create=self.target.auto_create)
        if problem:
            raise ValidationError(
                f"Target system '{self.target.id}': marker {problem}. Create it, or pass "
                "markers=False"
            )

    @contextmanager
    def resources(self) -> Iterator[Mapping[str, object]]:
        from flamingock_provider.stores._dynamodb_transaction import DynamoDBTransaction

        collector = DynamoDBTransaction(self.client, self.identity)
        yield {"client": self.client, "transaction": collector}
        collector.commit()

    @contextmanager
    def transaction(self) -> Iterator[_DynamoDBTransactionScope]:
        from flamingock_provider.stores._dynamodb_transaction import DynamoDBTransaction

        reserve = SHARED_RESERVE if self.shared else MARKER_RESERVE if self._markers_on else 0
        collector = DynamoDBTransaction(self.client, self.identity, reserved=reserve)
        scope = _DynamoDBTransactionScope(collector, self.client, self.shared)
        if self._markers_on:
            scope.markers = self.target.marker_table
        yield scope
        collector.commit()

    def has_marker(self, change_id: str, execution_id: str) -> bool:
        if not self._markers_on:
            return False
        try:
            item = self.client.get_item(
                TableName=self.target.marker_table,
                Key={"changeId": {"S": change_id}, "executionId": {"S": execution_id}},
                ConsistentRead=True,
            ).get("Item")
        except Exception as err:
            from flamingock_provider.stores._dynamodb import error_code

            if error_code(err) == "ResourceNotFoundException":
                return False
            raise
        return item is not None

    def clear_marker(self, change_id: str, execution_id: str) -> None:
        self.client.delete_item(
            TableName=self.target.marker_table,
            Key={"changeId": {"S": change_id}, "executionId": {"S": execution_id}},
        )

    def close(self) -> None:
        if self.owns:
            self.client.close()


def __getattr__(name: str) -> Any:
    """`DynamoDBTransaction` (the injected ``transaction``'s type) and its error, loaded lazily."""
    if name in ("DynamoDBTransaction", "DynamoDBTransactionError"):
        from flamingock_provider.stores import _dynamodb_transaction

        return getattr(_dynamodb_transaction, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
