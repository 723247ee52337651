"""DynamoDB Local for the benchmarks: started as the tests start it, stopped at the end.

The emulator is `tests/dynamodb_local.py`'s (fetched once into .cache/, a free loopback port;
``FLAMINGOCK_TEST_DYNAMODB_ENDPOINT`` points at one you run yourself). Round trips are HTTP
requests, counted with botocore's ``before-send`` event on the store's own client, so a retried
request counts again. The floor sends the store's two items per audit write (history put, latest
put, with the same conditions) as one ``TransactWriteItems`` with a plain boto3 client.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from backends import TESTS, Backend, Counter, new_prefix

from flamingock_provider.engine.model import AuditEntry
from flamingock_provider.stores._dynamodb import (
    PK,
    RANK,
    audit_item,
    history_key,
    latest_key,
    rank,
)
from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
import dynamodb_local

BATCH = 25  # BatchWriteItem's limit


def store_for(spec: dict[str, Any], prefix: str) -> DynamoDBAuditStore:
    local = dynamodb_local.DynamoDBLocal(spec["endpoint_url"])
    store = DynamoDBAuditStore(
        **local.options(audit_table=f"{prefix}audit", lock_table=f"{prefix}lock")
    )
    store.client  # noqa: B018 - build the client now (boto3 import, model), not in a timing
    return store


@contextmanager
def _requests(client: Any) -> Iterator[Counter]:
    """Count the HTTP requests ``client`` sends inside the block (botocore ``before-send``)."""
    counter = Counter()

    def one(**_: Any) -> None:
        counter.count += 1

    client.meta.events.register("before-send.dynamodb.*", one, unique_id=f"bench-{id(counter)}")
    try:
        yield counter
    finally:
        client.meta.events.unregister("before-send.dynamodb.*", unique_id=f"bench-{id(counter)}")


def _transact_items(table: str, entry: AuditEntry) -> list[dict[str, Any]]:
    """What `DynamoDBAuditStore.append` sends for ``entry``: the history put, the latest put."""
    latest = audit_item(entry, latest_key(entry.change_id))
    latest[RANK] = {"N": str(rank(entry))}
    return [
        {
            "Put": {
                "TableName": table,
                "Item": audit_item(entry, history_key(entry)),
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": PK},
            }
        },
        {
            "Put": {
                "TableName": table,
                "Item": latest,
                "ConditionExpression": "attribute_not_exists(#pk) OR #rank < :rank",
                "ExpressionAttributeNames": {"#pk": PK, "#rank": RANK},
                "ExpressionAttributeValues": {":rank": latest[RANK]},
            }
        },
    ]


class DynamoDBBackend(Backend):
    """DynamoDB Local, a JVM server on loopback: tables ``<prefix>audit`` / ``<prefix>lock``."""

    name = "DynamoDB"
    kind = "DynamoDB Local, a server on loopback"
    shared = True
    note = (
        "DynamoDB Local is Amazon's emulator (a Java server over SQLite) on loopback: its times "
        "include no network and none of AWS's latency or throttling, so read its ratios; its "
        "round-trip counts are the requests AWS would receive."
    )
    floor_text = (
        "one `TransactWriteItems` per entry holding the store's two conditional puts (history "
        "item, latest item), items built with the store's own helpers, plain boto3 client"
    )
    counting = (
        "HTTP requests, counted with botocore's `before-send` event on the store's own client "
        "(each `TransactWriteItems`, `Query`, `PutItem` … is one)"
    )

    def __init__(self) -> None:
        self.local = dynamodb_local.start()  # raises with the reason when it cannot
        self._prefixes: set[str] = set()
        self._stores: list[DynamoDBAuditStore] = []

    def spec(self) -> dict[str, Any]:
        return {"type": "dynamodb", "endpoint_url": self.local.endpoint_url}

    def store(self, prefix: str | None = None) -> DynamoDBAuditStore:
        prefix = prefix or new_prefix()
        self._prefixes.add(prefix)
        store = store_for(self.spec(), prefix)
        self._stores.append(store)
        return store

    def prefix_of(self, store: DynamoDBAuditStore) -> str:
        return store.audit_table_name[: -len("audit")]

    def round_trips(self, store: DynamoDBAuditStore) -> Any:
        return _requests(store.client)

    def floor(self, entries: Sequence[AuditEntry]) -> tuple[float, int]:
        """One ``TransactWriteItems`` per entry, as the store sends, items built up front."""
        tables = self.store()
        tables.initialize()
        requests = [_transact_items(tables.audit_table_name, e) for e in entries]
        client = self.local.new_client()
        try:
            client.list_tables(Limit=1)  # connect before timing, as the store has
            with _requests(client) as counter:
                started = time.perf_counter()
                for items in requests:
                    client.transact_write_items(TransactItems=items)
                elapsed = time.perf_counter() - started
        finally:
            client.close()
        return elapsed, counter.count

    def add_history(self, store: DynamoDBAuditStore, entries: Sequence[AuditEntry]) -> None:
        """BatchWriteItem of the history items (25 a call; unprocessed ones sent again)."""
        client, table = store.client, store.audit_table_name
        puts = [{"PutRequest": {"Item": audit_item(e, history_key(e))}} for e in entries]
        for start in range(0, len(puts), BATCH):
            pending = {table: puts[start : start + BATCH]}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems")

    def close(self) -> None:
        try:
            for store in self._stores:
                store.close()
            for prefix in self._prefixes:
                self.local.delete_tables(prefix)
        finally:
            self._stores.clear()
            self._prefixes.clear()
            self.local.stop()  # only an emulator this run started
