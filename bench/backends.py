"""The audit stores the benchmarks run on: one `Backend` per store kind, found per machine.

A backend builds stores whose tables (collections) carry a prefix of their own, so each
measurement starts empty; two stores built with the same prefix share their data (a racing
runner, a lock waiter). It counts a store's round trips with the driver's own hooks, issues the
raw-driver floor, seeds older history straight into the store, and removes everything it made
in `Backend.close`. Stores that other processes can reach (``shared``) also describe themselves
as a JSON `Backend.spec`, from which `store_from_spec` rebuilds a store in `race_worker`.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from flamingock_provider.engine.model import AuditEntry
from flamingock_provider.engine.store import AuditStore

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"  # tests/dynamodb_local.py and tests/mongodb_servers.py are reused

# spec["type"] -> the module whose `store_for(spec, prefix)` rebuilds the store
_MODULES = {"sql": "sql_backend", "dynamodb": "dynamodb_backend"}


class Counter:
    """Round trips counted inside a `Backend.round_trips` block (read it after the block)."""

    def __init__(self) -> None:
        self.count = 0


def new_prefix(letter: str = "b") -> str:
    return f"{letter}{uuid.uuid4().hex[:8]}_"


class Backend:
    """One audit store kind on one database (server, embedded file, or in-process stand-in)."""

    name: str
    kind: str
    """How the store is reached, shown next to its name (stand-ins say so)."""
    shared: bool = False
    """Whether other processes can reach its stores: the race and the lock hand-off need it."""
    note: str | None = None
    """How to read its figures, when it is a stand-in rather than the real thing."""
    counting: str = ""
    """What one round trip is for this store and which driver hook counts it."""
    floor_text: str = ""
    """What the raw-driver floor issues for each audit entry."""

    def store(self, prefix: str | None = None) -> AuditStore:
        """A store on the tables of ``prefix`` (a fresh prefix when None)."""
        raise NotImplementedError

    def prefix_of(self, store: Any) -> str:
        """The prefix ``store`` was built with."""
        raise NotImplementedError

    def round_trips(self, store: Any) -> AbstractContextManager[Counter]:
        """Count ``store``'s round trips inside the block."""
        raise NotImplementedError

    def floor(self, entries: Sequence[AuditEntry]) -> tuple[float, int]:
        """The same audit writes issued directly with the driver: (seconds, round trips)."""
        raise NotImplementedError

    def add_history(self, store: Any, entries: Sequence[AuditEntry]) -> None:
        """Write ``entries`` (older executions) straight into the history, not into latest."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """JSON that `store_from_spec` turns back into a store (``shared`` backends only)."""
        raise NotImplementedError(f"{self.name} stores cannot be reached from another process")

    def close(self) -> None:
        """Close every store built and remove every table it created."""


def store_from_spec(spec: dict[str, Any], prefix: str) -> AuditStore:
    """A store on the tables of ``prefix`` of the database `Backend.spec` describes."""
    module = importlib.import_module(_MODULES[spec["type"]])
    store: AuditStore = module.store_for(spec, prefix)
    return store


def available() -> Iterator[Backend]:
    """Every store this machine has, one at a time (each is set up when reached).

    Servers that do not answer, or drivers not installed, are left out with a line saying why.
    """
    import sql_backend

    yield from sql_backend.available()
    for module, factory in (
        ("dynamodb_backend", "DynamoDBBackend"),
        ("mongo_backend", "MongoBackend"),
        ("couchbase_backend", "CouchbaseBackend"),
    ):
        try:
            backend = getattr(importlib.import_module(module), factory)()
        except Exception as err:
            print(f"{factory[: -len('Backend')]}: not available, left out ({err})", flush=True)
            continue
        yield backend
