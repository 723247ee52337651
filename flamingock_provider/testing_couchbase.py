"""An in-memory stand-in for a Couchbase cluster: exactly the SDK calls Flamingock uses.

No Couchbase Server runs on a developer laptop or CI machine by default, so the Couchbase audit
store, `FlamingockCouchbaseHook` and `CouchbaseTargetSystem` are tested on this fake; the same
tests run on a real cluster when one is configured. Users may run their own pipelines on it::

    server = FakeCouchbaseServer(buckets=["flamingock"])
    store = CouchbaseAuditStore(server.connect(), bucket="flamingock")
    target = CouchbaseTargetSystem("catalog", cluster=server.connect(), bucket="flamingock")

It needs the ``couchbase`` extra installed: it raises the SDK's own exception classes and reads
the SDK's sub-document specs and options. What it does like the SDK (couchbase 4.x): the same
method names and result attributes (``cas``, ``content_as``, ``exists``, ``results``); real CAS
semantics (every mutation gets a new CAS; ``cas=`` on replace, remove and mutate_in is checked);
the SDK's own exceptions (``DocumentExistsException``, ``CasMismatchException``,
``DocumentNotFoundException``, ``PathExistsException``, ``ScopeAlreadyExistsException``,
``TransactionFailed`` ...); documents are JSON (stored encoded, so a caller never shares a
mutable object with the "server"); sub-document paths with backtick escaping;
``Transactions.run`` staging writes until commit and calling the logic again after a write
conflict, as the SDK's own loop does. `tests/contract/test_couchbase_sdk_semantics.py` checks
each of these against a real cluster when one is configured.

What it cannot prove, because it is not a server: durability (the level is only recorded),
replication and failover, timeouts, ambiguous outcomes other than the one simulated with
`FakeCouchbaseServer.commit_ambiguously`, the isolation of concurrent transactions beyond
CAS checks at commit, transaction expiry and lost-transaction cleanup, RBAC, and how the real
C++ core behaves when a transaction's operations come from another thread. It has no query,
search or analytics service at all: a call to ``cluster.query`` fails with ``AttributeError``.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from couchbase.exceptions import (
    BucketNotFoundException,
    CasMismatchException,
    CollectionAlreadyExistsException,
    CollectionNotFoundException,
    DocumentExistsException,
    DocumentNotFoundException,
    InvalidArgumentException,
    PathExistsException,
    PathMismatchException,
    PathNotFoundException,
    ScopeAlreadyExistsException,
    ScopeNotFoundException,
    TransactionCommitAmbiguous,
    TransactionExpired,
    TransactionFailed,
    UnAmbiguousTimeoutException,
    ValueFormatException,
)
from couchbase.subdocument import StoreSemantics, SubDocOp

__all__ = ["FakeCluster", "FakeCouchbaseServer", "Operation"]

DEFAULT = "_default"
MAX_ATTEMPTS = 5
_PATH_NOT_FOUND = 192  # SubDocStatus.PathNotFound


@dataclass(frozen=True)
class Operation:
    """One call the fake served: its name, ``bucket.scope.collection``, key and durability."""

    name: str
    keyspace: str
    key: str = ""
    durability: str | None = None


@dataclass
class _Doc:
    cas: int
    body: str  # JSON


Keyspace = tuple[str, str, str]


class FakeCouchbaseServer:
    """The data of a fake cluster; `connect` opens a client connection (`FakeCluster`) to it.

    :param buckets: the buckets that exist (each with scope and collection ``_default``).
    """

    def __init__(self, buckets: Iterable[str] = ("flamingock",)) -> None:
        self._mutex = threading.RLock()
        self._data: dict[str, dict[str, dict[str, dict[str, _Doc]]]] = {
            name: {DEFAULT: {DEFAULT: {}}} for name in buckets
        }
        self._cas = 0
        self.operations: list[Operation] = []
        self.conflicts_to_simulate = 0
        self.ambiguous_commits_to_simulate = 0

    def connect(self) -> FakeCluster:
        """A new client connection, as ``Cluster(connection_string, options)`` returns one."""
        return FakeCluster(self)

    # -- test helpers -------------------------------------------------------------------------

    def documents(self, bucket: str, scope: str, collection: str) -> dict[str, Any]:
        """Every document of a collection, decoded (a copy)."""
        with self._mutex:
            docs = self._collection((bucket, scope, collection))
            return {key: json.loads(doc.body) for key, doc in docs.items()}

    def has_collection(self, bucket: str, scope: str, collection: str) -> bool:
        with self._mutex:
            return collection in self._data.get(bucket, {}).get(scope, {})

    @contextmanager
    def recording(self) -> Iterator[list[Operation]]:
        """Collect the operations served inside the block (a list filled as they happen)."""
        start = len(self.operations)
        seen: list[Operation] = []
        try:
            yield seen
        finally:
            seen.extend(self.operations[start:])

    def conflict_next_commits(self, count: int = 1) -> None:
        """Make the next ``count`` transaction commits meet a write conflict (the SDK retries)."""
        self.conflicts_to_simulate = count

    def commit_ambiguously(self, count: int = 1) -> None:
        """Commit the next ``count`` transactions, then raise ``TransactionCommitAmbiguous``."""
        self.ambiguous_commits_to_simulate = count

    # -- internals ------------------------------------------------------------------------------

    def _record(self, name: str, keyspace: Keyspace, key: str = "", options: Any = None) -> None:
        durability = None
        level = (options or {}).get("durability")
        if level is not None:
            from couchbase.durability import DurabilityLevel

            durability = DurabilityLevel(level.level).name
        self.operations.append(Operation(name, ".".join(keyspace), key, durability))

    def _next_cas(self) -> int:
        self._cas += 1
        return self._cas

    def _bucket(self, name: str) -> dict[str, dict[str, dict[str, _Doc]]]:
        if name not in self._data:
            raise BucketNotFoundException(message=f"bucket '{name}' not found")
        return self._data[name]

    def _collection(self, keyspace: Keyspace) -> dict[str, _Doc]:
        bucket, scope, collection = keyspace
        scopes = self._bucket(bucket)
        if scope not in scopes or collection not in scopes[scope]:
            raise CollectionNotFoundException(
                message=f"collection '{scope}.{collection}' not found"
            )
        return scopes[scope][collection]


class FakeCluster:
    """A client connection to a `FakeCouchbaseServer`: ``bucket``, ``transactions``, ``close``."""

    def __init__(self, server: FakeCouchbaseServer) -> None:
        self.server = server
        self.closed = False

    def bucket(self, name: str) -> FakeBucket:
        self._check_open()
        with self.server._mutex:
            self.server._bucket(name)
        return FakeBucket(self, name)

    @property
    def transactions(self) -> FakeTransactions:
        return FakeTransactions(self)

    def wait_until_ready(self, timeout: Any, *options: Any, **kwargs: Any) -> None:
        self._check_open()

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise UnAmbiguousTimeoutException(message="the cluster connection is closed")


class FakeBucket:
    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def scope(self, name: str) -> FakeScope:
        return FakeScope(self, name)

    def default_scope(self) -> FakeScope:
        return self.scope(DEFAULT)

    def collection(self, name: str) -> FakeCollection:
        return self.default_scope().collection(name)

    def default_collection(self) -> FakeCollection:
        return self.default_scope().collection(DEFAULT)

    def collections(self) -> FakeCollectionManager:
        return FakeCollectionManager(self)


class FakeScope:
    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket = bucket
        self.bucket_name = bucket.name
        self.name = name

    def collection(self, name: str) -> FakeCollection:
        return FakeCollection(self, name)


@dataclass(frozen=True)
class FakeCollectionSpec:
    name: str
    scope_name: str


@dataclass(frozen=True)
class FakeScopeSpec:
    name: str
    collections: list[FakeCollectionSpec]


class FakeCollectionManager:
    """``bucket.collections()``: list, create and drop scopes and collections."""

    def __init__(self, bucket: FakeBucket) -> None:
        self._bucket = bucket
        self._server = bucket.cluster.server

    def get_all_scopes(self, *options: Any, **kwargs: Any) -> list[FakeScopeSpec]:
        self._bucket.cluster._check_open()
        with self._server._mutex:
            self._server._record("get_all_scopes", (self._bucket.name, "", ""))
            scopes = self._server._bucket(self._bucket.name)
            return [
                FakeScopeSpec(name, [FakeCollectionSpec(c, name) for c in collections])
                for name, collections in scopes.items()
            ]

    def create_scope(self, scope_name: str, *options: Any, **kwargs: Any) -> None:
        self._bucket.cluster._check_open()
        with self._server._mutex:
            self._server._record("create_scope", (self._bucket.name, scope_name, ""))
            scopes = self._server._bucket(self._bucket.name)
            if scope_name in scopes:
                raise ScopeAlreadyExistsException(message=f"scope '{scope_name}' exists")
            scopes[scope_name] = {}

    def create_collection(
        self, scope_name: str, collection_name: str, settings: Any = None, *options: Any
    ) -> None:
        self._bucket.cluster._check_open()
        if not isinstance(scope_name, str):
            raise InvalidArgumentException(message="pass scope_name and collection_name")
        with self._server._mutex:
            keyspace = (self._bucket.name, scope_name, collection_name)
            self._server._record("create_collection", keyspace)
            scopes = self._server._bucket(self._bucket.name)
            if scope_name not in scopes:
                raise ScopeNotFoundException(message=f"scope '{scope_name}' not found")
            if collection_name in scopes[scope_name]:
                raise CollectionAlreadyExistsException(message=f"'{collection_name}' exists")
            scopes[scope_name][collection_name] = {}

    def drop_scope(self, scope_name: str, *options: Any, **kwargs: Any) -> None:
        self._bucket.cluster._check_open()
        with self._server._mutex:
            self._server._record("drop_scope", (self._bucket.name, scope_name, ""))
            scopes = self._server._bucket(self._bucket.name)
            if scope_name not in scopes:
                raise ScopeNotFoundException(message=f"scope '{scope_name}' not found")
            del scopes[scope_name]


# -- key-value results ------------------------------------------------------------------------


class _Content:
    """``result.content_as[dict]`` of a get: the decoded value cast to the type."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __getitem__(self, type_: Callable[[Any], Any]) -> Any:
        return type_(copy.deepcopy(self._value))


class FakeGetResult:
    def __init__(self, key: str, cas: int, value: Any) -> None:
        self.key = key
        self.cas = cas
        self.content_as = _Content(value)


class FakeMutationResult:
    def __init__(self, key: str, cas: int) -> None:
        self.key = key
        self.cas = cas


class FakeExistsResult:
    def __init__(self, cas: int | None) -> None:
        self.exists = cas is not None
        self.cas = cas or 0


class _SubdocContent:
    """``result.content_as[dict](index)`` of a lookup_in."""

    def __init__(self, items: list[tuple[int, Any]], key: str) -> None:
        self._items = items
        self._key = key

    def __getitem__(self, type_: Callable[[Any], Any]) -> Callable[[int], Any]:
        def at(index: int) -> Any:
            status, value = self._items[index]
            if status == _PATH_NOT_FOUND:
                raise PathNotFoundException(message=f"path not found, key={self._key}")
            return type_(copy.deepcopy(value))

        return at


class FakeLookupInResult:
    def __init__(self, key: str, cas: int, items: list[tuple[int, Any]]) -> None:
        self.key = key
        self.cas = cas
        self._items = items
        self.content_as = _SubdocContent(items, key)

    def exists(self, index: int) -> bool:
        return self._items[index][0] == 0


class FakeMultiGetResult:
    def __init__(self, outcomes: dict[str, FakeGetResult | Exception]) -> None:
        self.results = {k: v for k, v in outcomes.items() if isinstance(v, FakeGetResult)}
        self.exceptions = {k: v for k, v in outcomes.items() if isinstance(v, Exception)}
        self.all_ok = not self.exceptions


# -- collections ------------------------------------------------------------------------------


def _options(options: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for option in options:
        merged.update(option)
    merged.update(kwargs)
    return merged


def _encode(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueFormatException(message=f"value is not JSON: {err}") from None


class FakeCollection:
    """Key-value and sub-document operations on one collection, with real CAS semantics."""

    def __init__(self, scope: FakeScope, name: str) -> None:
        self.name = name
        self._cluster = scope.bucket.cluster
        self._server = self._cluster.server
        self.keyspace: Keyspace = (scope.bucket_name, scope.name, name)

    @contextmanager
    def _serve(self, name: str, key: str, options: Any = None) -> Iterator[dict[str, _Doc]]:
        self._cluster._check_open()
        with self._server._mutex:
            self._server._record(name, self.keyspace, key, options)
            yield self._server._collection(self.keyspace)

    def get(self, key: str, *options: Any, **kwargs: Any) -> FakeGetResult:
        return self._get("get", key)

    def _get(self, name: str, key: str) -> FakeGetResult:
        with self._serve(name, key) as docs:
            doc = docs.get(key)
            if doc is None:
                raise DocumentNotFoundException(message=f"document not found, key={key}")
            return FakeGetResult(key, doc.cas, json.loads(doc.body))

    def get_multi(self, keys: Sequence[str], *options: Any, **kwargs: Any) -> FakeMultiGetResult:
        """One round trip; each key is recorded as one ``get_multi`` operation."""
        outcomes: dict[str, FakeGetResult | Exception] = {}
        for key in keys:
            try:
                outcomes[key] = self._get("get_multi", key)
            except DocumentNotFoundException as err:
                outcomes[key] = err
        if not _options(options, kwargs).get("return_exceptions", True):
            for outcome in outcomes.values():
                if isinstance(outcome, Exception):
                    raise outcome
        return FakeMultiGetResult(outcomes)

    def exists(self, key: str, *options: Any, **kwargs: Any) -> FakeExistsResult:
        with self._serve("exists", key) as docs:
            doc = docs.get(key)
            return FakeExistsResult(None if doc is None else doc.cas)

    def insert(self, key: str, value: Any, *options: Any, **kwargs: Any) -> FakeMutationResult:
        opts = _options(options, kwargs)
        with self._serve("insert", key, opts) as docs:
            if key in docs:
                raise DocumentExistsException(message=f"document exists, key={key}")
            docs[key] = _Doc(self._server._next_cas(), _encode(value))
            return FakeMutationResult(key, docs[key].cas)

    def upsert(self, key: str, value: Any, *options: Any, **kwargs: Any) -> FakeMutationResult:
        opts = _options(options, kwargs)
        with self._serve("upsert", key, opts) as docs:
            docs[key] = _Doc(self._server._next_cas(), _encode(value))
            return FakeMutationResult(key, docs[key].cas)

    def replace(self, key: str, value: Any, *options: Any, **kwargs: Any) -> FakeMutationResult:
        opts = _options(options, kwargs)
        with self._serve("replace", key, opts) as docs:
            doc = self._checked(docs, key, opts.get("cas"))
            doc.body, doc.cas = _encode(value), self._server._next_cas()
            return FakeMutationResult(key, doc.cas)

    def remove(self, key: str, *options: Any, **kwargs: Any) -> FakeMutationResult:
        opts = _options(options, kwargs)
        with self._serve("remove", key, opts) as docs:
            self._checked(docs, key, opts.get("cas"))
            del docs[key]
            return FakeMutationResult(key, self._server._next_cas())

    def lookup_in(
        self, key: str, specs: Sequence[Any], *options: Any, **kwargs: Any
    ) -> FakeLookupInResult:
        with self._serve("lookup_in", key) as docs:
            doc = docs.get(key)
            if doc is None:
                raise DocumentNotFoundException(message=f"document not found, key={key}")
            body = json.loads(doc.body)
            items: list[tuple[int, Any]] = []
            for spec in specs:
                op, path = spec[0], spec[1]
                if op not in (SubDocOp.GET, SubDocOp.EXISTS) or spec[2]:
                    raise NotImplementedError(f"the fake has no lookup_in op {op!r} (xattr)")
                found, value = _lookup(body, _parse_path(path))
                if op is SubDocOp.EXISTS:
                    items.append((0, found))
                else:
                    items.append((0, value) if found else (_PATH_NOT_FOUND, None))
            return FakeLookupInResult(key, doc.cas, items)

    def mutate_in(
        self, key: str, specs: Sequence[Any], *options: Any, **kwargs: Any
    ) -> FakeMutationResult:
        opts = _options(options, kwargs)
        semantics = opts.get("store_semantics", StoreSemantics.REPLACE)
        with self._serve("mutate_in", key, opts) as docs:
            doc = docs.get(key)
            if semantics is StoreSemantics.INSERT and doc is not None:
                raise DocumentExistsException(message=f"document exists, key={key}")
            if doc is None and semantics is StoreSemantics.REPLACE:
                raise DocumentNotFoundException(message=f"document not found, key={key}")
            if doc is not None:
                self._checked(docs, key, opts.get("cas"))
            elif opts.get("cas"):
                raise DocumentNotFoundException(message=f"document not found, key={key}")
            body = json.loads(doc.body) if doc is not None else {}
            for spec in specs:
                _mutate(body, spec, key)
            encoded = _encode(body)
            if doc is None:
                doc = docs[key] = _Doc(0, encoded)
            doc.body, doc.cas = encoded, self._server._next_cas()
            return FakeMutationResult(key, doc.cas)

    @staticmethod
    def _checked(docs: dict[str, _Doc], key: str, cas: int | None) -> _Doc:
        doc = docs.get(key)
        if doc is None:
            raise DocumentNotFoundException(message=f"document not found, key={key}")
        if cas and cas != doc.cas:
            raise CasMismatchException(message=f"CAS mismatch, key={key}")
        return doc


# -- sub-document paths -----------------------------------------------------------------------


def _parse_path(path: str) -> list[str]:
    """``a.`b.c`.d`` -> ``["a", "b.c", "d"]``; a doubled backtick is a literal one."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(path):
        char = path[i]
        if quoted:
            if char == "`":
                if path[i + 1 : i + 2] == "`":
                    current.append("`")
                    i += 1
                else:
                    quoted = False
            else:
                current.append(char)
        elif char == "`":
            quoted = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        elif char == "[":
            raise NotImplementedError(f"the fake has no array index paths: {path!r}")
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _lookup(body: Any, parts: list[str]) -> tuple[bool, Any]:
    node = body
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _mutate(body: dict[str, Any], spec: Any, key: str) -> None:
    op, path, create_parents, xattr = spec[0], spec[1], spec[2], spec[3]
    value = spec[5]
    if xattr:
        raise NotImplementedError("the fake has no extended attributes")
    parts = _parse_path(path)
    parent: Any = body
    for part in parts[:-1]:
        if not isinstance(parent, dict):
            raise PathMismatchException(message=f"path mismatch, path={path}, key={key}")
        if part not in parent:
            if not create_parents:
                raise PathNotFoundException(message=f"path not found, path={path}, key={key}")
            parent[part] = {}
        parent = parent[part]
    if not isinstance(parent, dict):
        raise PathMismatchException(message=f"path mismatch, path={path}, key={key}")
    leaf = parts[-1]
    if op is SubDocOp.DICT_ADD:
        if leaf in parent:
            raise PathExistsException(message=f"path exists, path={path}, key={key}")
        parent[leaf] = copy.deepcopy(value)
    elif op is SubDocOp.DICT_UPSERT:
        parent[leaf] = copy.deepcopy(value)
    elif op is SubDocOp.REPLACE:
        if leaf not in parent:
            raise PathNotFoundException(message=f"path not found, path={path}, key={key}")
        parent[leaf] = copy.deepcopy(value)
    elif op is SubDocOp.ARRAY_PUSH_LAST:
        if leaf not in parent:
            if not create_parents:
                raise PathNotFoundException(message=f"path not found, path={path}, key={key}")
            parent[leaf] = []
        if not isinstance(parent[leaf], list):
            raise PathMismatchException(message=f"not an array, path={path}, key={key}")
        parent[leaf].extend(copy.deepcopy(list(value)))
    else:
        raise NotImplementedError(f"the fake has no mutate_in op {op!r}")


# -- transactions -----------------------------------------------------------------------------


class FakeTransactionGetResult:
    def __init__(self, keyspace: Keyspace, key: str, cas: int, value: Any) -> None:
        self.id = key
        self.cas = cas
        self.keyspace = keyspace
        self.content_as = _Content(value)


@dataclass
class _Staged:
    kind: str  # insert | replace | remove
    value: Any
    base_cas: int | None  # the CAS the document had when read; None for an insert


class FakeAttemptContext:
    """One attempt of a transaction: writes are staged and become visible only on commit."""

    def __init__(self, server: FakeCouchbaseServer) -> None:
        self._server = server
        self._staged: dict[tuple[Keyspace, str], _Staged] = {}

    def get(self, coll: FakeCollection, key: str, *options: Any, **kwargs: Any) -> Any:
        with self._server._mutex:
            self._server._record("tx_get", coll.keyspace, key)
            staged = self._staged.get((coll.keyspace, key))
            if staged is not None:
                if staged.kind == "remove":
                    raise DocumentNotFoundException(message=f"document not found, key={key}")
                cas = staged.base_cas or 0
                return FakeTransactionGetResult(coll.keyspace, key, cas, staged.value)
            doc = self._server._collection(coll.keyspace).get(key)
            if doc is None:
                raise DocumentNotFoundException(message=f"document not found, key={key}")
            return FakeTransactionGetResult(coll.keyspace, key, doc.cas, json.loads(doc.body))

    def insert(self, coll: FakeCollection, key: str, value: Any, *options: Any) -> Any:
        with self._server._mutex:
            self._server._record("tx_insert", coll.keyspace, key)
            staged = self._staged.get((coll.keyspace, key))
            exists = key in self._server._collection(coll.keyspace)
            if (staged is not None and staged.kind != "remove") or (exists and staged is None):
                raise DocumentExistsException(message=f"document exists, key={key}")
            decoded = json.loads(_encode(value))
            base = staged.base_cas if staged is not None else None
            self._staged[(coll.keyspace, key)] = _Staged(
                "replace" if base is not None else "insert", decoded, base
            )
            return FakeTransactionGetResult(coll.keyspace, key, base or 0, decoded)

    def replace(self, result: FakeTransactionGetResult, value: Any, *options: Any) -> Any:
        with self._server._mutex:
            self._server._record("tx_replace", result.keyspace, result.id)
            slot = (result.keyspace, result.id)
            previous = self._staged.get(slot)
            kind = (
                previous.kind if previous is not None and previous.kind == "insert" else "replace"
            )
            base = previous.base_cas if previous is not None else result.cas
            decoded = json.loads(_encode(value))
            self._staged[slot] = _Staged(kind, decoded, base)
            return FakeTransactionGetResult(result.keyspace, result.id, base or 0, decoded)

    def remove(self, result: FakeTransactionGetResult, *options: Any) -> None:
        with self._server._mutex:
            self._server._record("tx_remove", result.keyspace, result.id)
            slot = (result.keyspace, result.id)
            previous = self._staged.get(slot)
            if previous is not None and previous.kind == "insert":
                del self._staged[slot]
                return
            base = previous.base_cas if previous is not None else result.cas
            self._staged[slot] = _Staged("remove", None, base)

    def _commit(self) -> bool:
        """Apply every staged write atomically; False on a write-write conflict (CAS moved)."""
        server = self._server
        with server._mutex:
            if server.conflicts_to_simulate:
                server.conflicts_to_simulate -= 1
                return False
            for (keyspace, key), staged in self._staged.items():
                doc = server._collection(keyspace).get(key)
                if staged.kind == "insert" and doc is not None:
                    return False
                if staged.kind != "insert" and (doc is None or doc.cas != staged.base_cas):
                    return False
            for (keyspace, key), staged in self._staged.items():
                server._record("tx_commit", keyspace, key)
                docs = server._collection(keyspace)
                if staged.kind == "remove":
                    del docs[key]
                else:
                    docs[key] = _Doc(server._next_cas(), _encode(staged.value))
            return True


class FakeTransactionResult:
    def __init__(self) -> None:
        self.transaction_id = str(uuid.uuid4())
        self.unstaging_complete = True


class FakeTransactions:
    """``cluster.transactions``: ``run(logic, options)`` with the SDK's retry loop."""

    def __init__(self, cluster: FakeCluster) -> None:
        self._cluster = cluster

    def run(
        self, logic: Callable[[Any], None], transaction_options: Any = None, **kwargs: Any
    ) -> FakeTransactionResult:
        self._cluster._check_open()
        server = self._cluster.server
        for _attempt in range(MAX_ATTEMPTS):
            ctx = FakeAttemptContext(server)
            try:
                logic(ctx)
            except Exception as ex:
                if isinstance(ex, TransactionExpired):
                    raise ex from None
                raise TransactionFailed(exc_info={"inner_cause": ex}) from None
            if ctx._commit():
                with server._mutex:
                    ambiguous = server.ambiguous_commits_to_simulate > 0
                    if ambiguous:
                        server.ambiguous_commits_to_simulate -= 1
                if ambiguous:
                    raise TransactionCommitAmbiguous(message="simulated: commit outcome unknown")
                return FakeTransactionResult()
        raise TransactionExpired(message=f"no attempt committed in {MAX_ATTEMPTS} attempts")
