"""Target systems: what change units work on. Each is cheap to declare in a DAG file.

Classes are loaded on first attribute access so that ``from flamingock_provider.targets import
SqlTargetSystem`` in a DAG file imports no database driver and no store code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flamingock_provider.targets.couchbase import CouchbaseTargetSystem
    from flamingock_provider.targets.dynamodb import DynamoDBTargetSystem
    from flamingock_provider.targets.hook import HookTargetSystem
    from flamingock_provider.targets.mongodb import MongoDBTargetSystem
    from flamingock_provider.targets.sql import SqlTargetSystem

__all__ = [
    "CouchbaseTargetSystem",
    "DynamoDBTargetSystem",
    "HookTargetSystem",
    "MongoDBTargetSystem",
    "SqlTargetSystem",
]

_WHERE = {
    "SqlTargetSystem": "flamingock_provider.targets.sql",
    "HookTargetSystem": "flamingock_provider.targets.hook",
    "MongoDBTargetSystem": "flamingock_provider.targets.mongodb",
    "DynamoDBTargetSystem": "flamingock_provider.targets.dynamodb",
    "CouchbaseTargetSystem": "flamingock_provider.targets.couchbase",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
