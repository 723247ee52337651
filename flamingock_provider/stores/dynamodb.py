"""The DynamoDB audit store: history plus a latest-state record per change, and the lock.

Layout of the audit table (key ``partitionKey`` HASH, ``sortKey`` RANGE, both strings):

- history: ``partitionKey = "change#<changeId>"``, ``sortKey = "<executionId>#<state>"``. The
  key is the uniqueness of (execution, change, state): a put conditioned on
  ``attribute_not_exists`` refuses a duplicate.
- latest: ``partitionKey = "latest"``, ``sortKey = "<changeId>"``: a copy of the change's latest
  entry plus ``latestRank`` (epoch microseconds * 10 + state priority, the tie-break of
  `model.latest_entries` as one number). `read_latest` is one strongly consistent ``Query`` of
  that partition: O(changes), never a ``Scan`` of the history.

Each append is one ``TransactWriteItems``: the history put and the latest put, the latter
conditioned on ``latestRank`` being lower, so the two never disagree. Times are epoch
milliseconds (numbers; a fraction keeps the microseconds). Lock expiry is decided by the
runner's clock (``now`` is passed in): see docs/audit-stores/dynamodb.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from flamingock_provider.engine.errors import AuditStoreError
from flamingock_provider.engine.model import AuditEntry, LockRecord
from flamingock_provider.stores._dynamodb import (
    DEFAULT_AUDIT_TABLE,
    DEFAULT_LOCK_TABLE,
    HISTORY_PREFIX,
    LATEST_PARTITION,
    LOCK_KEY,
    PK,
    RANK,
    SK,
    ClientSettings,
    TableSpec,
    audit_entry,
    audit_item,
    check_billing,
    describe_table,
    ensure_table,
    error_code,
    error_text,
    from_epoch_millis,
    history_key,
    item_text,
    latest_key,
    lock_item,
    rank,
    to_epoch_millis,
)
from flamingock_provider.stores._dynamodb_transaction import (
    DynamoDBTransaction,
    DynamoDBTransactionError,
    RenderedAudit,
)

T = TypeVar("T")

_NAMES = {"#pk": PK}


class DynamoDBAuditStore:
    """`AuditStore` on Amazon DynamoDB (or DynamoDB Local).

    :param region_name: AWS region (else boto3's default: ``AWS_DEFAULT_REGION``, profile).
    :param endpoint_url: another endpoint, e.g. ``http://127.0.0.1:8000`` for DynamoDB Local.
    :param aws_access_key_id: with ``aws_secret_access_key`` (and ``aws_session_token``) the
        credentials; leave all empty for boto3's default chain (role, environment, profile).
    :param audit_table: history table name.
    :param lock_table: lock table name.
    :param auto_create: create missing tables; when false, validate and fail clearly instead.
    :param billing_mode: ``PAY_PER_REQUEST`` (default) or ``PROVISIONED`` for created tables.
    :param read_capacity_units: with ``PROVISIONED``.
    :param write_capacity_units: with ``PROVISIONED``.
    :param max_attempts: botocore's attempts per call (throttling, 5xx, connection errors).
    """

    def __init__(
        self,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        audit_table: str = DEFAULT_AUDIT_TABLE,
        lock_table: str = DEFAULT_LOCK_TABLE,
        auto_create: bool = True,
        billing_mode: str = "PAY_PER_REQUEST",
        read_capacity_units: int | None = None,
        write_capacity_units: int | None = None,
        max_attempts: int = 8,
    ) -> None:
        self.settings = ClientSettings(
            region_name=region_name,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            max_attempts=max_attempts,
        )
        self.audit_table_name = audit_table
        self.lock_table_name = lock_table
        self.auto_create = auto_create
        self.billing_mode = billing_mode
        self.read_capacity_units = read_capacity_units
        self.write_capacity_units = write_capacity_units
        self.audit_spec = TableSpec(audit_table, ((PK, "HASH", "S"), (SK, "RANGE", "S")))
        self.lock_spec = TableSpec(lock_table, ((LOCK_KEY, "HASH", "S"),))
        self._ready = False

    # -- identity -------------------------------------------------------------------------

    @property
    def description(self) -> str:
        return (
            f"DynamoDB audit store {self.settings.location} "
            f"(tables {self.audit_table_name}, {self.lock_table_name})"
        )

    def __repr__(self) -> str:
        return f"<{self.description}>"

    @cached_property
    def client(self) -> Any:
        """The store's boto3 DynamoDB client (built on first use)."""
        return self.settings.client()

    @property
    def identity(self) -> tuple[str, str, str]:
        """Endpoint, region and access key id: equal identities can share a transaction."""
        return self.settings.identity()

    # -- tables ---------------------------------------------------------------------------

    def initialize(self) -> None:
        """Create (``auto_create``) or validate both tables: one DescribeTable each when present."""
        if self._ready:
            return
        if self.auto_create:
            check_billing(
                self.description,
                self.billing_mode,
                self.read_capacity_units,
                self.write_capacity_units,
            )
        for spec in (self.audit_spec, self.lock_spec):
            problem = self._guard("initialize", spec.name, self._ensure, spec)
            if problem:
                raise AuditStoreError(
                    f"{self.description}: {problem}. See docs/audit-stores/dynamodb.md.",
                    store=self.description,
                    operation="validate",
                )
        self._ready = True

    def _ensure(self, spec: TableSpec) -> str | None:
        return ensure_table(
            self.client,
            spec,
            create=self.auto_create,
            billing_mode=self.billing_mode,
            read_capacity=self.read_capacity_units,
            write_capacity=self.write_capacity_units,
        )

    def _describe(self, name: str) -> dict[str, Any] | None:
        return describe_table(self.client, name)

    def is_initialized(self) -> bool:
        """Whether both tables exist: one DescribeTable each, nothing written."""
        for name in (self.audit_table_name, self.lock_table_name):
            found = self._guard("describe_table", name, self._describe, name)
            if found is None:
                return False
        return True

    # -- history --------------------------------------------------------------------------

    def read_latest(self) -> Mapping[str, AuditEntry]:
        """One consistent Query of the latest partition (a page per MB); never a Scan."""
        request = {
            "TableName": self.audit_table_name,
            "KeyConditionExpression": "#pk = :latest",
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {":latest": {"S": LATEST_PARTITION}},
            "ConsistentRead": True,
        }

        def run() -> dict[str, AuditEntry]:
            entries = (self._entry(item) for item in self._pages("query", request))
            return {entry.change_id: entry for entry in entries}

        return self._guard("read_latest", self.audit_table_name, run)

    def read_history(self, since: datetime | None = None) -> list[AuditEntry]:
        """Every history record, oldest first: a consistent Scan (not on the planning path)."""
        request: dict[str, Any] = {
            "TableName": self.audit_table_name,
            "FilterExpression": "begins_with(#pk, :history)",
            "ExpressionAttributeNames": dict(_NAMES),
            "ExpressionAttributeValues": {":history": {"S": HISTORY_PREFIX}},
            "ConsistentRead": True,
        }
        if since is not None:
            request["FilterExpression"] += " AND #created >= :since"
            request["ExpressionAttributeNames"]["#created"] = "createdAt"
            request["ExpressionAttributeValues"][":since"] = {"N": to_epoch_millis(since)}

        def run() -> list[AuditEntry]:
            entries = [self._entry(item) for item in self._pages("scan", request)]
            return sorted(entries, key=AuditEntry.sort_key)

        return self._guard("read_history", self.audit_table_name, run)

    def append(self, entry: AuditEntry, transaction: object | None = None) -> None:
        """One TransactWriteItems (history + latest); or join ``transaction`` (TX_SHARED)."""
        if transaction is not None:
            if (
                not isinstance(transaction, DynamoDBTransaction)
                or transaction.identity != self.identity
            ):
                raise AuditStoreError(
                    f"{self.description}: a shared transaction must be a DynamoDB transaction "
                    "on the audit store's own endpoint, region and account",
                    store=self.description,
                    operation="append",
                )
            transaction.join_audit(entry, self.render_audit)
            return
        own = DynamoDBTransaction(self.client, self.identity)
        own.join_audit(entry, self.render_audit)
        try:
            self._guard("append", self.audit_table_name, own.commit)
        except DynamoDBTransactionError as err:
            raise AuditStoreError(
                f"{self.description}: append of '{entry.change_id}' ({entry.state.value}) to "
                f"table '{self.audit_table_name}' refused: {err}",
                store=self.description,
                operation="append",
            ) from err

    def render_audit(self, entries: Sequence[AuditEntry], stale: frozenset[str]) -> RenderedAudit:
        """The TransactWriteItems operations that record ``entries``.

        One conditional history put per entry and, per change, a put of its newest entry as the
        latest record, unless the change is in ``stale`` (the stored latest is newer): then a
        condition check that it still is.
        """
        operations: list[dict[str, Any]] = []
        duplicates: dict[int, str] = {}
        newest: dict[str, AuditEntry] = {}
        for entry in entries:
            key = str((entry.execution_id, entry.change_id, entry.state.value))
            if key in duplicates.values():
                raise AuditStoreError(
                    f"{self.description}: duplicate audit entry {key} in one transaction",
                    store=self.description,
                    operation="append",
                )
            duplicates[len(operations)] = key
            operations.append({"Put": self._history_put(entry)})
            current = newest.get(entry.change_id)
            if current is None or entry.sort_key() > current.sort_key():
                newest[entry.change_id] = entry
        latest: dict[int, str] = {}
        for change_id, entry in newest.items():
            latest[len(operations)] = change_id
            operations.append(self._latest_write(entry, stale=change_id in stale))
        return RenderedAudit(operations, latest, duplicates)

    def _history_put(self, entry: AuditEntry) -> dict[str, Any]:
        return {
            "TableName": self.audit_table_name,
            "Item": audit_item(entry, history_key(entry)),
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": _NAMES,
        }

    def _latest_write(self, entry: AuditEntry, *, stale: bool) -> dict[str, Any]:
        values = {":rank": {"N": str(rank(entry))}}
        key = latest_key(entry.change_id)
        if stale:  # the stored latest is newer: keep it, and check that it still is
            check = {
                "TableName": self.audit_table_name,
                "Key": key,
                "ConditionExpression": "#rank >= :rank",
                "ExpressionAttributeNames": {"#rank": RANK},
                "ExpressionAttributeValues": values,
            }
            return {"ConditionCheck": check}
        item = audit_item(entry, key)
        item[RANK] = values[":rank"]
        put = {
            "TableName": self.audit_table_name,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#pk) OR #rank < :rank",
            "ExpressionAttributeNames": {**_NAMES, "#rank": RANK},
            "ExpressionAttributeValues": values,
        }
        return {"Put": put}

    # -- lock -----------------------------------------------------------------------------

    def lock_acquire(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        """One conditional PutItem: free, expired at ``now``, or already ours."""
        request = {
            "TableName": self.lock_table_name,
            "Item": lock_item(key, owner, expires_at),
            "ConditionExpression": "attribute_not_exists(#k) OR #exp <= :now OR #owner = :owner",
            "ExpressionAttributeNames": {"#k": LOCK_KEY, "#exp": "expiresAt", "#owner": "owner"},
            "ExpressionAttributeValues": {
                ":now": {"N": to_epoch_millis(now)},
                ":owner": {"S": owner},
            },
        }
        return self._conditional("lock_acquire", lambda: self.client.put_item(**request))

    def lock_extend(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        """One conditional UpdateItem: only while the record is ours."""
        request = {
            "TableName": self.lock_table_name,
            "Key": {LOCK_KEY: {"S": key}},
            "UpdateExpression": "SET #exp = :exp",
            "ConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#exp": "expiresAt", "#owner": "owner"},
            "ExpressionAttributeValues": {
                ":exp": {"N": to_epoch_millis(expires_at)},
                ":owner": {"S": owner},
            },
        }
        return self._conditional("lock_extend", lambda: self.client.update_item(**request))

    def lock_release(self, key: str, owner: str) -> None:
        """One conditional DeleteItem; someone else's record is left alone."""
        request = {
            "TableName": self.lock_table_name,
            "Key": {LOCK_KEY: {"S": key}},
            "ConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
        }
        self._conditional("lock_release", lambda: self.client.delete_item(**request))

    def lock_holder(self, key: str) -> LockRecord | None:
        def run() -> LockRecord | None:
            item = self.client.get_item(
                TableName=self.lock_table_name, Key={LOCK_KEY: {"S": key}}, ConsistentRead=True
            ).get("Item")
            if item is None:
                return None
            return LockRecord(
                key,
                item["owner"]["S"],
                from_epoch_millis(item["expiresAt"]["N"]),
                item.get("status", {}).get("S", "LOCK_HELD"),
            )

        return self._guard("lock_holder", self.lock_table_name, run)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()

    # -- helpers --------------------------------------------------------------------------

    def _pages(self, operation: str, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        call = getattr(self.client, operation)
        start: dict[str, Any] | None = None
        while True:
            page = call(**request, **({"ExclusiveStartKey": start} if start else {}))
            yield from page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _conditional(self, operation: str, write: Callable[[], object]) -> bool:
        def run() -> bool:
            try:
                write()
            except Exception as err:
                if error_code(err) == "ConditionalCheckFailedException":
                    return False
                raise
            return True

        return self._guard(operation, self.lock_table_name, run)

    def _guard(self, operation: str, table: str, work: Callable[..., T], *args: Any) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return work(*args)
        except (ClientError, BotoCoreError) as err:
            raise AuditStoreError(
                f"{self.description}: {operation} on table '{table}' failed: "
                f"{error_text(err, self.settings)}",
                store=self.description,
                operation=operation,
            ) from err

    def _entry(self, item: Mapping[str, Any]) -> AuditEntry:
        try:
            return audit_entry(item)
        except (ValueError, KeyError, TypeError, ArithmeticError) as err:
            raise AuditStoreError(
                f"{self.description}: audit record of change '{item_text(item, 'changeId')}' "
                f"(execution {item_text(item, 'executionId')}) in table "
                f"'{self.audit_table_name}' is unreadable: {type(err).__name__}: {err}. It was "
                "not written by flamingock_provider; fix or remove it.",
                store=self.description,
                operation="read",
            ) from err
