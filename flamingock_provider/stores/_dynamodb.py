"""What the DynamoDB audit store and the DynamoDB target system share.

Client settings (and the one place a boto3 client is built), table key schemas with their
create-or-validate step, epoch-millisecond times, and the item format of audit and lock records.
Imported only when DynamoDB is actually used; boto3 itself is imported inside functions.
"""

from __future__ import annotations

import calendar
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pendulum

from flamingock_provider.engine.errors import ValidationError

if TYPE_CHECKING:
    from flamingock_provider.engine.model import AuditEntry

DEFAULT_AUDIT_TABLE = "flamingockAuditLog"
DEFAULT_LOCK_TABLE = "flamingockLock"
DEFAULT_MARKER_TABLE = "flamingockMarker"
BILLING_MODES = ("PAY_PER_REQUEST", "PROVISIONED")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# -- settings and client ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """Where and as whom to reach DynamoDB; the secrets never appear in ``repr``.

    Empty credentials mean boto3's default chain (environment, profile, instance role).
    Throttling, ``5xx`` and connection errors are retried by botocore (``retry_mode``), up to
    ``max_attempts`` requests per call in all.
    """

    region_name: str | None = None
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    retry_mode: str = "standard"
    max_attempts: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    @property
    def location(self) -> str:
        """Endpoint and region, for messages."""
        where = self.endpoint_url or "AWS"
        return f"{where} (region {self.region_name or 'from the environment'})"

    def identity(self) -> tuple[str, str, str]:
        """What makes two settings the same DynamoDB: endpoint, region and access key id.

        The access key stands for the account: the same endpoint and region under two accounts
        are two databases, and a transaction cannot span them.
        """
        endpoint = (self.endpoint_url or "").rstrip("/").lower()
        return (endpoint, self.region_name or "", self.aws_access_key_id or "")

    def client(self) -> Any:
        """A new low-level DynamoDB client (thread-safe; build it once and share it)."""
        import boto3
        import botocore.session
        from botocore.config import Config

        core = botocore.session.get_session()
        core.register_component("data_loader", _model_loader())
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=self.aws_access_key_id or None,
            aws_secret_access_key=self.aws_secret_access_key or None,
            aws_session_token=self.aws_session_token or None,
            region_name=self.region_name or None,
        )
        config = Config(
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )
        return session.client("dynamodb", endpoint_url=self.endpoint_url or None, config=config)

    def scrub(self, text: str) -> str:
        """``text`` with the secret access key and the session token replaced by ``***``."""
        for secret in (self.aws_secret_access_key, self.aws_session_token):
            if secret:
                text = text.replace(secret, "***")
        return text


@functools.cache
def _model_loader() -> Any:
    """botocore's loader of service models, shared: a client then costs ~7 ms instead of ~80.

    It caches read-only JSON (the DynamoDB API model, endpoints); no credentials, no state.
    """
    import botocore.loaders

    return botocore.loaders.create_loader()


def error_code(err: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (else the exception's type name)."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", type(err).__name__))
    return type(err).__name__


def error_text(err: BaseException, settings: ClientSettings) -> str:
    """``Code: message`` of a botocore error, first line only, secrets scrubbed."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        detail = str(response.get("Error", {}).get("Message", "")) or str(err)
    else:
        detail = str(err)
    first = (detail.strip().splitlines() or [""])[0][:300]
    return settings.scrub(f"{error_code(err)}: {first}")


# -- tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """A table's name and key schema: ``(attribute, HASH|RANGE, S|N|B)`` pairs."""

    name: str
    keys: tuple[tuple[str, str, str], ...]

    def describe_keys(self) -> str:
        return _render_keys(self.keys)

    def create_request(
        self, billing_mode: str, read_capacity: int | None, write_capacity: int | None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TableName": self.name,
            "KeySchema": [{"AttributeName": a, "KeyType": k} for a, k, _ in self.keys],
            "AttributeDefinitions": [
                {"AttributeName": a, "AttributeType": t} for a, _, t in self.keys
            ],
            "BillingMode": billing_mode,
        }
        if billing_mode == "PROVISIONED":
            request["ProvisionedThroughput"] = {
                "ReadCapacityUnits": read_capacity,
                "WriteCapacityUnits": write_capacity,
            }
        return request


def _render_keys(keys: Sequence[tuple[str, str, str]]) -> str:
    return "[" + ", ".join(f"{a} {k} {t}" for a, k, t in keys) + "]"


def key_schema_of(description: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The key schema of a ``DescribeTable`` answer, in the `TableSpec.keys` form."""
    types = {d["AttributeName"]: d["AttributeType"] for d in description["AttributeDefinitions"]}
    order = {"HASH": 0, "RANGE": 1}
    keys = sorted(description["KeySchema"], key=lambda k: order.get(k["KeyType"], 2))
    return tuple(
        (k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], "?")) for k in keys
    )


def describe_table(client: Any, name: str) -> dict[str, Any] | None:
    """The table's description, or None when it does not exist."""
    try:
        table: dict[str, Any] = client.describe_table(TableName=name)["Table"]
    except Exception as err:
        if error_code(err) == "ResourceNotFoundException":
            return None
        raise
    return table


def ensure_table(
    client: Any,
    spec: TableSpec,
    *,
    create: bool,
    billing_mode: str = "PAY_PER_REQUEST",
    read_capacity: int | None = None,
    write_capacity: int | None = None,
) -> str | None:
    """Make sure ``spec`` exists, is ACTIVE and has its key schema; return a problem or None.

    With ``create`` a missing table is created (a concurrent creator is fine) and waited for.
    One ``DescribeTable`` when the table is already there.
    """
    table = describe_table(client, spec.name)
    if table is None:
        if not create:
            return (
                f"table '{spec.name}' does not exist and auto_create is off; expected key schema "
                f"{spec.describe_keys()}"
            )
        try:
            request = spec.create_request(billing_mode, read_capacity, write_capacity)
            table = client.create_table(**request)["TableDescription"]
        except Exception as err:
            if error_code(err) != "ResourceInUseException":  # another runner created it
                raise
            table = describe_table(client, spec.name)
            if table is None:
                raise
    found = key_schema_of(table)
    if found != spec.keys:
        return (
            f"table '{spec.name}' has key schema {_render_keys(found)}, expected "
            f"{spec.describe_keys()}; it was not created by flamingock_provider. Use another "
            "table name or remove that table"
        )
    if table.get("TableStatus") != "ACTIVE":
        waiter = client.get_waiter("table_exists")
        waiter.wait(TableName=spec.name, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    return None


def check_billing(
    owner: str, billing_mode: str, read_capacity: int | None, write_capacity: int | None
) -> None:
    """Refuse a billing mode DynamoDB would refuse, before any table is touched."""
    if billing_mode not in BILLING_MODES:
        raise ValidationError(
            f"{owner}: billing_mode must be one of {', '.join(BILLING_MODES)}, got {billing_mode!r}"
        )
    if billing_mode == "PROVISIONED" and not (read_capacity and write_capacity):
        raise ValidationError(
            f"{owner}: billing_mode PROVISIONED needs read_capacity_units and "
            "write_capacity_units (positive integers)"
        )


# -- values ----------------------------------------------------------------------------------


def epoch_micros(value: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware time (exact)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC")
    # Not (value - epoch) // 1µs: pendulum's Interval cannot floor-divide by a timedelta.
    return calendar.timegm(value.utctimetuple()) * 1_000_000 + value.microsecond


def to_epoch_millis(value: datetime) -> str:
    """Epoch milliseconds as a DynamoDB number; microseconds are kept as a fraction."""
    return format(Decimal(epoch_micros(value)).scaleb(-3), "f")


def from_epoch_millis(number: str) -> datetime:
    """The timezone-aware UTC time of `to_epoch_millis`'s number (exact, no float)."""
    micros = int(Decimal(number).scaleb(3))
    moment: datetime = pendulum.instance(_EPOCH + timedelta(microseconds=micros), tz="UTC")
    return moment


# -- record format ---------------------------------------------------------------------------

PK, SK = "partitionKey", "sortKey"
LATEST_PARTITION = "latest"
HISTORY_PREFIX = "change#"
RANK = "latestRank"
LOCK_KEY = "key"
_STRINGS = (
    "executionId",
    "stageId",
    "changeId",
    "author",
    "state",
    "type",
    "invokedClass",
    "invokedMethod",
    "sourceFile",
    "executionHostname",
    "txStrategy",
    "targetSystemId",
    "changeOrder",
    "recoveryStrategy",
)


def history_key(entry: AuditEntry) -> dict[str, Any]:
    """``change#<changeId>`` / ``<executionId>#<state>``: unique per (execution, change, state)."""
    return {
        PK: {"S": f"{HISTORY_PREFIX}{entry.change_id}"},
        SK: {"S": f"{entry.execution_id}#{entry.state.value}"},
    }


def latest_key(change_id: str) -> dict[str, Any]:
    """``latest`` / ``<changeId>``: one partition holds every change's latest entry."""
    return {PK: {"S": LATEST_PARTITION}, SK: {"S": change_id}}


def rank(entry: AuditEntry) -> int:
    """`AuditEntry.sort_key` as one number: epoch microseconds, then the state priority."""
    return epoch_micros(entry.created_at) * 10 + entry.state.priority


def audit_item(entry: AuditEntry, key: Mapping[str, Any]) -> dict[str, Any]:
    """The entry as a low-level item with Flamingock's field names, under ``key``."""
    record = entry.as_json()
    item: dict[str, Any] = dict(key)
    for name in _STRINGS:
        item[name] = {"S": str(record[name])}
    item["createdAt"] = {"N": to_epoch_millis(entry.created_at)}
    item["executionMillis"] = {"N": str(int(entry.execution_millis))}
    item["systemChange"] = {"BOOL": bool(entry.system_change)}
    item["transactionFlag"] = {"BOOL": bool(entry.transaction_flag)}
    if entry.metadata:
        item["metadata"] = {"S": json.dumps(dict(entry.metadata), default=str)}
    if entry.error_trace is not None:
        item["errorTrace"] = {"S": entry.error_trace}
    return item


def item_text(item: Mapping[str, Any], name: str, default: str = "") -> str:
    return str(item.get(name, {}).get("S", default))


def audit_entry(item: Mapping[str, Any]) -> AuditEntry:
    """The entry of an `audit_item`.

    :raises ValueError, KeyError, TypeError, ArithmeticError: the item is not one of ours.
    """
    from flamingock_provider.engine.model import AuditEntry, AuditState, Recovery, TxStrategy

    def text(name: str) -> str:
        return item_text(item, name)

    metadata = text("metadata")
    return AuditEntry(
        execution_id=text("executionId"),
        change_id=text("changeId"),
        state=AuditState(text("state")),
        created_at=from_epoch_millis(item["createdAt"]["N"]),
        stage_id=text("stageId"),
        author=text("author"),
        type=text("type"),
        invoked_class=text("invokedClass"),
        invoked_method=text("invokedMethod"),
        source_file=text("sourceFile"),
        metadata=json.loads(metadata) if metadata else {},
        execution_millis=int(item.get("executionMillis", {}).get("N", "0")),
        execution_hostname=text("executionHostname"),
        error_trace=item["errorTrace"]["S"] if "errorTrace" in item else None,
        system_change=bool(item.get("systemChange", {}).get("BOOL", False)),
        tx_strategy=TxStrategy(text("txStrategy")),
        target_system_id=text("targetSystemId"),
        change_order=text("changeOrder"),
        recovery_strategy=Recovery(text("recoveryStrategy")),
        transaction_flag=bool(item.get("transactionFlag", {}).get("BOOL", False)),
    )


def lock_item(key: str, owner: str, expires_at: datetime) -> dict[str, Any]:
    """The lock record: ``key``, ``status``, ``owner``, ``expiresAt`` (epoch milliseconds)."""
    return {
        LOCK_KEY: {"S": key},
        "status": {"S": "LOCK_HELD"},
        "owner": {"S": owner},
        "expiresAt": {"N": to_epoch_millis(expires_at)},
    }
