"""`DynamoDBTransaction`: the ``transaction`` a DynamoDB change unit fills.

A collector of ``TransactWriteItems`` operations that the target system commits atomically after
``apply`` returns, together with the audit records under `TxStrategy.TX_SHARED` (the store
renders them, `DynamoDBAuditStore.render_audit`) or the marker. The store's own appends use it
too, so one commit path handles DynamoDB's cancellation reasons. boto3 is imported in functions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flamingock_provider.engine.errors import FlamingockError, ValidationError
from flamingock_provider.stores._dynamodb import error_code

if TYPE_CHECKING:
    from flamingock_provider.engine.model import AuditEntry

MAX_TRANSACT_ITEMS = 100
"""DynamoDB's limit on the operations of one ``TransactWriteItems`` call."""

_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
_COMMIT_ATTEMPTS = 6


def serialize(value: Any) -> dict[str, Any]:
    """A Python value as a low-level DynamoDB attribute value (floats become exact decimals)."""
    from boto3.dynamodb.types import TypeSerializer

    result: dict[str, Any] = TypeSerializer().serialize(_decimals(value))
    return result


def serialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: serialize(value) for name, value in item.items()}


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decimals(v) for v in value]
    return value


class DynamoDBTransactionError(FlamingockError):
    """A ``TransactWriteItems`` commit was refused; nothing of it was written.

    ``reasons`` holds one ``(index, operation, code, message)`` per refused operation.
    """

    def __init__(self, message: str, reasons: Sequence[tuple[int, str, str, str]] = ()) -> None:
        super().__init__(message)
        self.reasons = tuple(reasons)


AuditRenderer = Callable[[Sequence["AuditEntry"], frozenset[str]], "RenderedAudit"]


@dataclass(frozen=True)
class RenderedAudit:
    """Audit operations for a transaction; ``latest`` maps an operation index to a change id."""

    operations: list[dict[str, Any]]
    latest: dict[int, str]
    duplicates: dict[int, str]


class DynamoDBTransaction:
    """TransactWriteItems operations, committed atomically after the change's ``apply`` returns.

    Values are plain Python (``str``, ``int``, ``Decimal``, ``float``, ``bool``, ``None``,
    ``list``, ``dict``, ``set``, ``bytes``). Nothing is written until the commit, so a change
    cannot read its own writes; an ``apply`` that raises writes nothing. DynamoDB allows at most
    100 operations per transaction, some of which the audit records or the marker may use:
    adding one more than `capacity` raises `ValidationError`.
    """

    def __init__(self, client: Any, identity: tuple[str, str, str], *, reserved: int = 0) -> None:
        self.client = client
        self.identity = identity
        self._reserved = reserved
        self._operations: list[dict[str, Any]] = []
        self._audit: list[AuditEntry] = []
        self._renderer: AuditRenderer | None = None

    # -- what a change calls ------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """How many operations the change may add in total."""
        return MAX_TRANSACT_ITEMS - self._reserved

    def put(
        self,
        table: str,
        item: Mapping[str, Any],
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Put ``item`` into ``table`` (optionally only if ``condition`` holds)."""
        body = {"TableName": table, "Item": serialize_item(item)}
        self.add({"Put": _with_expressions(body, condition, names, values)})

    def update(
        self,
        table: str,
        key: Mapping[str, Any],
        update: str,
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply the ``UpdateExpression`` ``update`` to the item ``key`` of ``table``."""
        body = {"TableName": table, "Key": serialize_item(key), "UpdateExpression": update}
        self.add({"Update": _with_expressions(body, condition, names, values)})

    def delete(
        self,
        table: str,
        key: Mapping[str, Any],
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Delete the item ``key`` of ``table``."""
        body = {"TableName": table, "Key": serialize_item(key)}
        self.add({"Delete": _with_expressions(body, condition, names, values)})

    def condition_check(
        self,
        table: str,
        key: Mapping[str, Any],
        condition: str,
        *,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Commit only if ``condition`` holds for the item ``key`` of ``table``."""
        body = {"TableName": table, "Key": serialize_item(key)}
        self.add({"ConditionCheck": _with_expressions(body, condition, names, values)})

    def add(self, operation: Mapping[str, Any]) -> None:
        """Add one low-level ``TransactItems`` element (``{"Put": {...}}`` etc.) as given."""
        if len(self._operations) >= self.capacity:
            raise ValidationError(
                f"A DynamoDB transaction holds at most {MAX_TRANSACT_ITEMS} operations; this "
                f"change may add {self.capacity} ({self._reserved} are kept for the audit "
                "records or the marker). Split the change, or make it non-transactional."
            )
        self._operations.append(dict(operation))

    def add_reserved(self, operation: Mapping[str, Any]) -> None:
        """Add an operation of the target's own (the marker) in one of the reserved slots."""
        if len(self._operations) >= MAX_TRANSACT_ITEMS:
            raise ValidationError(f"A DynamoDB transaction holds at most {MAX_TRANSACT_ITEMS}")
        self._operations.append(dict(operation))

    @property
    def operations(self) -> list[dict[str, Any]]:
        """The operations collected so far (a copy)."""
        return list(self._operations)

    def __len__(self) -> int:
        return len(self._operations)

    # -- what the store and the target call -----------------------------------------------------

    def join_audit(self, entry: AuditEntry, renderer: AuditRenderer) -> None:
        """Let ``entry`` commit with this transaction (`TxStrategy.TX_SHARED`)."""
        if self._renderer is not None and self._renderer != renderer:
            raise ValidationError("one DynamoDB transaction cannot write to two audit stores")
        self._renderer = renderer
        self._audit.append(entry)

    def commit(self) -> None:
        """Write everything in one ``TransactWriteItems``; nothing at all when empty.

        A transaction conflict or throttling of one item is retried; an audit entry older than
        its change's latest one keeps that latest (a condition check instead of a put).
        :raises DynamoDBTransactionError: DynamoDB refused it; nothing was written.
        """
        if not self._operations and not self._audit:
            return
        stale: frozenset[str] = frozenset()
        for attempt in range(_COMMIT_ATTEMPTS):
            rendered = (
                self._renderer(self._audit, stale)
                if self._renderer is not None
                else RenderedAudit([], {}, {})
            )
            operations = self._operations + rendered.operations
            if len(operations) > MAX_TRANSACT_ITEMS:
                raise ValidationError(
                    f"A DynamoDB transaction holds at most {MAX_TRANSACT_ITEMS} operations; "
                    f"this one has {len(operations)}"
                )
            try:
                self.client.transact_write_items(TransactItems=operations)
                return
            except Exception as err:
                if error_code(err) != "TransactionCanceledException":
                    raise
                failed = _failed_reasons(err)
                offset = len(self._operations)
                latest = {offset + i: change for i, change in rendered.latest.items()}
                codes = {code for code, _ in failed.values()}
                if codes and codes <= _RETRYABLE_REASONS and attempt + 1 < _COMMIT_ATTEMPTS:
                    time.sleep(random.uniform(0, 0.05 * 2**attempt))
                    continue
                if failed and set(failed) <= set(latest) and codes == {"ConditionalCheckFailed"}:
                    stale = stale ^ frozenset(latest[i] for i in failed)
                    continue
                reasons = [
                    (i, next(iter(operations[i])), code, text)
                    for i, (code, text) in sorted(failed.items())
                ]
                duplicates = {offset + i: key for i, key in rendered.duplicates.items()}
                raise DynamoDBTransactionError(
                    _refusal(operations, reasons, duplicates), reasons
                ) from err
        raise DynamoDBTransactionError(
            f"DynamoDB transaction not committed after {_COMMIT_ATTEMPTS} attempts"
        )


def _with_expressions(
    body: dict[str, Any],
    condition: str | None,
    names: Mapping[str, str] | None,
    values: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if condition:
        body["ConditionExpression"] = condition
    if names:
        body["ExpressionAttributeNames"] = dict(names)
    if values:
        body["ExpressionAttributeValues"] = {k: serialize(v) for k, v in values.items()}
    return body


def _failed_reasons(err: BaseException) -> dict[int, tuple[str, str]]:
    """``{operation index: (code, message)}`` of the operations a cancellation names."""
    response = getattr(err, "response", {}) or {}
    failed: dict[int, tuple[str, str]] = {}
    for index, reason in enumerate(response.get("CancellationReasons") or []):
        code = str(reason.get("Code") or "None")
        if code != "None":
            failed[index] = (code, str(reason.get("Message") or ""))
    return failed


def _refusal(
    operations: Sequence[Mapping[str, Any]],
    reasons: Sequence[tuple[int, str, str, str]],
    duplicates: Mapping[int, str],
) -> str:
    parts = []
    for index, kind, code, text in reasons:
        body = operations[index][kind]
        what = f"operation {index + 1} ({kind} on table '{body.get('TableName')}')"
        if index in duplicates and code == "ConditionalCheckFailed":
            text = f"duplicate audit entry {duplicates[index]}"
        parts.append(f"{what}: {code}{': ' + text if text else ''}")
    detail = "; ".join(parts) or "no reason given"
    return f"DynamoDB transaction of {len(operations)} operations refused: {detail}"
