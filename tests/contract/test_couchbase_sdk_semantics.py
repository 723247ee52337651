"""The SDK behaviour the Couchbase store relies on, checked on the fake and on a real cluster.

These pin down exactly what `flamingock_provider.testing_couchbase` claims to imitate: CAS
checks, insert-if-absent, sub-document paths and store semantics, multi-get, and transaction
staging. On a run with ``FLAMINGOCK_TEST_COUCHBASE_CONNSTR`` set, the ``real`` parameter proves
the fake and the server agree on each of them.
"""

from __future__ import annotations

from typing import Any

import couchbase_servers
import pytest
from couchbase.exceptions import (
    CasMismatchException,
    DocumentExistsException,
    DocumentNotFoundException,
    PathExistsException,
    TransactionFailed,
)
from couchbase.options import GetMultiOptions, MutateInOptions, RemoveOptions, ReplaceOptions
from couchbase.subdocument import StoreSemantics, array_append, get, insert, upsert
from couchbase_servers import CouchbaseDeployment


@pytest.fixture(params=couchbase_servers.deployment_params())
def collection(request: pytest.FixtureRequest) -> Any:
    """An empty collection in a scope of the test's own, on the fake or the real cluster."""
    deployment = CouchbaseDeployment(real=request.param)
    scope = deployment.create_scope(collections=("docs",))
    cluster = deployment.cluster()
    yield cluster.bucket(deployment.bucket).scope(scope).collection("docs")
    deployment.close()


def test_insert_of_an_existing_key_raises_document_exists(collection: Any) -> None:
    """``insert`` only creates: the second one raises and the first value stays."""
    collection.insert("k", {"v": 1})

    with pytest.raises(DocumentExistsException):
        collection.insert("k", {"v": 2})

    assert {"v": 1} == collection.get("k").content_as[dict]


def test_replace_and_remove_with_a_stale_cas_raise_cas_mismatch(collection: Any) -> None:
    """Every mutation changes the CAS; a write naming an older CAS is refused."""
    stale = collection.insert("k", {"v": 1}).cas
    fresh = collection.replace("k", {"v": 2}, ReplaceOptions(cas=stale)).cas

    with pytest.raises(CasMismatchException):
        collection.replace("k", {"v": 3}, ReplaceOptions(cas=stale))
    with pytest.raises(CasMismatchException):
        collection.remove("k", RemoveOptions(cas=stale))

    assert (True, {"v": 2}) == (fresh != stale, collection.get("k").content_as[dict])


def test_cas_writes_on_a_missing_document_raise_not_found(collection: Any) -> None:
    """``replace`` and ``remove`` of a missing key raise `DocumentNotFoundException`."""
    with pytest.raises(DocumentNotFoundException):
        collection.replace("missing", {"v": 1})
    with pytest.raises(DocumentNotFoundException):
        collection.remove("missing")


def test_subdocument_insert_of_an_existing_path_raises_and_writes_nothing(collection: Any) -> None:
    """One ``mutate_in`` is atomic: a failing spec leaves the document as it was."""
    collection.insert("k", {"entries": {"a": 1}})

    with pytest.raises(PathExistsException):
        collection.mutate_in("k", [upsert("other", 2), insert("entries.a", 9)])

    assert {"entries": {"a": 1}} == collection.get("k").content_as[dict]


def test_upsert_semantics_creates_the_document_and_array_append_creates_the_array(
    collection: Any,
) -> None:
    """``StoreSemantics.UPSERT`` with ``create_parents``: the first append makes doc and array."""
    options = MutateInOptions(store_semantics=StoreSemantics.UPSERT)
    collection.mutate_in("k", [array_append("entries", ["e1", 1], create_parents=True)], options)
    collection.mutate_in("k", [array_append("entries", ["e2", 2], create_parents=True)], options)

    assert {"entries": [["e1", 1], ["e2", 2]]} == collection.get("k").content_as[dict]


def test_backtick_quoted_path_components_hold_dots_and_backticks(collection: Any) -> None:
    """```a.b``` is one component named ``a.b``; a doubled backtick is a literal one."""
    collection.insert("k", {"changes": {}})
    collection.mutate_in("k", [upsert("changes.`a.b``c`", {"x": 1})])

    found = collection.lookup_in("k", [get("changes.`a.b``c`"), get("changes.`nope`")])

    assert ({"changes": {"a.b`c": {"x": 1}}}, True, False, {"x": 1}) == (
        collection.get("k").content_as[dict],
        found.exists(0),
        found.exists(1),
        found.content_as[dict](0),
    )


def test_mutate_in_with_a_stale_cas_raises_cas_mismatch(collection: Any) -> None:
    """A sub-document write can be made conditional on the CAS its read returned."""
    collection.insert("k", {"changes": {}})
    read = collection.lookup_in("k", [get("changes")])
    collection.mutate_in("k", [upsert("changes.`x`", 1)])

    with pytest.raises(CasMismatchException):
        collection.mutate_in("k", [upsert("changes.`y`", 2)], MutateInOptions(cas=read.cas))


def test_get_multi_returns_missing_keys_as_exceptions(collection: Any) -> None:
    """With ``return_exceptions``, found keys are in ``results``, missing ones in ``exceptions``."""
    collection.insert("a", {"v": 1})

    result = collection.get_multi(["a", "b"], GetMultiOptions(return_exceptions=True))

    assert (["a"], ["b"], DocumentNotFoundException) == (
        list(result.results),
        list(result.exceptions),
        type(result.exceptions["b"]),
    )


def test_transaction_writes_are_invisible_until_commit_and_gone_on_failure(
    collection: Any,
) -> None:
    """Inside ``transactions.run`` a plain ``get`` still sees the old value; raising in the
    logic rolls back (`TransactionFailed`), returning commits."""
    collection.insert("k", {"v": 1})
    seen_outside: list[Any] = []

    def change(fail: bool) -> Any:
        def logic(ctx: Any) -> None:
            doc = ctx.get(collection, "k")
            ctx.replace(doc, {"v": doc.content_as[dict]["v"] + 1})
            ctx.insert(collection, "new", {"v": 0})
            seen_outside.append(collection.get("k").content_as[dict])
            if fail:
                raise RuntimeError("boom")

        return logic

    transactions = _transactions(collection)
    with pytest.raises(TransactionFailed):
        transactions.run(change(fail=True))
    after_failure = collection.get("k").content_as[dict]
    transactions.run(change(fail=False))

    assert ({"v": 1}, {"v": 2}) == (after_failure, collection.get("k").content_as[dict])
    assert [{"v": 1}, {"v": 1}] == seen_outside


def test_a_transactional_get_of_a_missing_document_raises_not_found(collection: Any) -> None:
    """``ctx.get`` raises `DocumentNotFoundException`, and catching it lets the attempt go on."""
    outcomes: list[str] = []

    def logic(ctx: Any) -> None:
        try:
            ctx.get(collection, "missing")
        except DocumentNotFoundException:
            outcomes.append("not found")
        ctx.insert(collection, "missing", {"v": 1})

    _transactions(collection).run(logic)

    assert (["not found"], {"v": 1}) == (outcomes, collection.get("missing").content_as[dict])


def _transactions(collection: Any) -> Any:
    """The cluster's ``transactions`` for a collection of the fake or of the real SDK."""
    cluster = getattr(collection, "_cluster", None)  # the fake keeps its cluster
    if cluster is None:  # the SDK: collection -> scope -> bucket -> cluster
        cluster = couchbase_servers._real_cluster()
    return cluster.transactions
