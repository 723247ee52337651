"""The AuditStore contract (engine/store.py): the same tests for every audit store.

The first part runs on every store in `conftest.BACKENDS`; the second on the SQL stores only
(schema validation, statement counts, secrets). Times are explicit (`T0` + offsets) except in the
`Lease` tests, which wait out real contention with small numbers.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import servers
from sqlalchemy import Table, event, text
from store_backends import Backend, SqlBackend

from flamingock_provider.engine.errors import AuditStoreError, LockError
from flamingock_provider.engine.lock import DEFAULT_KEY, Lease
from flamingock_provider.engine.model import (
    AuditEntry,
    AuditState,
    LockRecord,
    Recovery,
    TxStrategy,
)
from flamingock_provider.stores.sql import SqlAuditStore

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
KEY = DEFAULT_KEY
ALICE = "alice@host-a#1"
BOB = "bob@host-b#2"
TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _entry(**overrides: Any) -> AuditEntry:
    """An audit entry with plain defaults; override any field."""
    fields: dict[str, Any] = {
        "execution_id": "exec-1",
        "change_id": "change-a",
        "state": AuditState.APPLIED,
        "created_at": T0,
        "stage_id": "stage-1",
        "author": "contract-tests",
        "tx_strategy": TxStrategy.TX_SEPARATE_NO_MARKER,
    }
    fields.update(overrides)
    return AuditEntry(**fields)


def _full_entry() -> AuditEntry:
    """An entry where every field differs from its default."""
    return AuditEntry(
        execution_id="0b5e6c3e-3d0f-4f5e-9a59-1c2d3e4f5a6b",
        change_id="create-orders-table",
        state=AuditState.ROLLBACK_FAILED,
        created_at=datetime(2024, 2, 29, 23, 59, 58, 999999, tzinfo=timezone.utc),
        stage_id="orders",
        author="data-team",
        type="EXECUTION",
        invoked_class="changes.orders._0001__create.CreateOrdersTable",
        invoked_method="rollback",
        source_file="/opt/dags/changes/orders/_0001__create.py",
        metadata={"ticket": "OPS-42", "rows": 12, "nested": {"ok": [True, None, 1.5]}},
        execution_millis=123456789012,
        execution_hostname="worker-7.example",
        error_trace='Traceback (most recent call last):\n  File "x.py"\nValueError: naïve ✗',
        system_change=True,
        tx_strategy=TxStrategy.TX_SEPARATE_WITH_MARKER,
        target_system_id="orders-db",
        change_order="0001",
        recovery_strategy=Recovery.ALWAYS_RETRY,
        transaction_flag=True,
    )


def _ready(store_factory: Backend) -> Any:
    store = store_factory()
    store.initialize()
    return store


def _fields(record: LockRecord | None) -> tuple[str, str, datetime, str] | None:
    if record is None:
        return None
    return (record.key, record.owner, record.expires_at, record.status)


# -- initialisation ------------------------------------------------------------------------


def test_initialize_is_idempotent(store_factory: Backend) -> None:
    """Initialising twice, or from a second store on the same tables, keeps the history."""
    store = _ready(store_factory)
    entry = _entry()
    store.append(entry)

    store.initialize()
    other = store_factory()
    other.initialize()

    assert [entry] == other.read_history()


def test_is_initialized_only_after_initialize(store_factory: Backend) -> None:
    """`is_initialized` is false on a fresh store, creates nothing, and is true afterwards."""
    store = store_factory()

    before = [store.is_initialized(), store.is_initialized()]
    store.initialize()

    assert [False, False, True] == [*before, store.is_initialized()]


def test_fresh_store_reads_empty(store_factory: Backend) -> None:
    """An initialised store without entries has no latest entries and no history."""
    store = _ready(store_factory)

    assert ({}, []) == (dict(store.read_latest()), store.read_history())


# -- history ---------------------------------------------------------------------------------


def test_read_latest_keeps_the_newest_entry_of_each_change(store_factory: Backend) -> None:
    """Each change maps to its newest entry; other changes do not interfere."""
    store = _ready(store_factory)
    a_started = _entry(change_id="a", state=AuditState.STARTED, created_at=_at(0))
    a_applied = _entry(change_id="a", state=AuditState.APPLIED, created_at=_at(1))
    b_started = _entry(change_id="b", state=AuditState.STARTED, created_at=_at(2))
    for entry in (a_applied, b_started, a_started):
        store.append(entry)

    assert {"a": a_applied, "b": b_started} == dict(store.read_latest())


@pytest.mark.parametrize(
    ("winner", "loser"),
    [
        (AuditState.APPLIED, AuditState.STARTED),
        (AuditState.FAILED, AuditState.APPLIED),
        (AuditState.ROLLED_BACK, AuditState.FAILED),
        (AuditState.ROLLBACK_FAILED, AuditState.ROLLED_BACK),
        (AuditState.MANUAL_MARKED_AS_APPLIED, AuditState.ROLLBACK_FAILED),
        (AuditState.MANUAL_MARKED_AS_ROLLED_BACK, AuditState.MANUAL_MARKED_AS_APPLIED),
    ],
    ids=lambda state: state.value,
)
@pytest.mark.parametrize("winner_first", [True, False], ids=["winner-first", "winner-last"])
def test_read_latest_breaks_a_created_at_tie_by_state_priority(
    store_factory: Backend, winner: AuditState, loser: AuditState, winner_first: bool
) -> None:
    """On equal `created_at` the higher state priority wins, whatever the insertion order."""
    store = _ready(store_factory)
    won = _entry(state=winner)
    lost = _entry(state=loser)
    for entry in (won, lost) if winner_first else (lost, won):
        store.append(entry)

    assert {"change-a": won} == dict(store.read_latest())


def test_read_latest_prefers_a_newer_entry_over_a_higher_priority(
    store_factory: Backend,
) -> None:
    """One microsecond newer beats the highest priority: time first, priority only on a tie."""
    store = _ready(store_factory)
    marked = _entry(state=AuditState.MANUAL_MARKED_AS_ROLLED_BACK, created_at=T0)
    started = _entry(
        execution_id="exec-2", state=AuditState.STARTED, created_at=T0 + timedelta(microseconds=1)
    )
    store.append(started)
    store.append(marked)

    assert {"change-a": started} == dict(store.read_latest())


def test_read_history_is_oldest_first(store_factory: Backend) -> None:
    """History comes back ordered by `created_at`, not by insertion."""
    store = _ready(store_factory)
    entries = [_entry(change_id=f"c{i}", created_at=_at(i)) for i in range(3)]
    for entry in (entries[2], entries[0], entries[1]):
        store.append(entry)

    assert entries == store.read_history()


def test_read_history_since_includes_the_boundary(store_factory: Backend) -> None:
    """``since`` keeps the entries created at or after it."""
    store = _ready(store_factory)
    entries = [_entry(change_id=f"c{i}", created_at=_at(i)) for i in range(3)]
    for entry in entries:
        store.append(entry)

    assert entries[1:] == store.read_history(since=_at(1))


@pytest.mark.parametrize(
    "entry",
    [_full_entry(), AuditEntry("exec-min", "minimal", AuditState.STARTED, T0)],
    ids=["every-field-set", "defaults"],
)
def test_every_field_round_trips(store_factory: Backend, entry: AuditEntry) -> None:
    """What is appended reads back equal, field by field, through both readers."""
    store = _ready(store_factory)
    store.append(entry)

    history = store.read_history()
    latest = store.read_latest()

    assert [entry] == history
    assert {entry.change_id: entry} == dict(latest)
    for read in (history[0], latest[entry.change_id]):
        assert (timedelta(0), entry.created_at.microsecond) == (
            read.created_at.utcoffset(),
            read.created_at.microsecond,
        )
        assert (dict, AuditState, TxStrategy, Recovery, bool, bool) == (
            type(read.metadata),
            type(read.state),
            type(read.tx_strategy),
            type(read.recovery_strategy),
            type(read.system_change),
            type(read.transaction_flag),
        )


def test_duplicate_execution_change_and_state_raises(store_factory: Backend) -> None:
    """(execution, change, state) is unique; the other combinations are distinct entries."""
    store = _ready(store_factory)
    entry = _entry()
    store.append(entry)
    other_state = _entry(state=AuditState.STARTED)
    other_execution = _entry(execution_id="exec-2")
    store.append(other_state)
    store.append(other_execution)

    with pytest.raises(AuditStoreError):
        store.append(_entry(created_at=_at(5)))

    assert 3 == len(store.read_history())


def test_append_in_a_foreign_transaction_raises(store_factory: Backend) -> None:
    """A transaction handle the store did not hand out is refused, and nothing is written."""
    store = _ready(store_factory)

    with pytest.raises(AuditStoreError):
        store.append(_entry(), transaction=object())

    assert [] == store.read_history()


# -- lock ------------------------------------------------------------------------------------


def test_lock_acquire_when_free(store_factory: Backend) -> None:
    """A free key is taken, and the holder shows the owner and the expiry."""
    store = _ready(store_factory)

    acquired = store.lock_acquire(KEY, ALICE, T0, _at(60))

    assert (True, (KEY, ALICE, _at(60), "LOCK_HELD")) == (acquired, _fields(store.lock_holder(KEY)))


def test_lock_refused_to_another_owner_while_unexpired(store_factory: Backend) -> None:
    """Another owner cannot take an unexpired lock, from another store on the same tables."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    acquired = store_factory().lock_acquire(KEY, BOB, _at(59), _at(119))

    assert (False, ALICE, _at(60)) == (
        acquired,
        store.lock_holder(KEY).owner,
        store.lock_holder(KEY).expires_at,
    )


def test_lock_taken_over_after_expiry(store_factory: Backend) -> None:
    """Once ``now`` is past the expiry, another owner takes the lock."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    acquired = store_factory().lock_acquire(KEY, BOB, _at(61), _at(121))

    assert (True, (KEY, BOB, _at(121), "LOCK_HELD")) == (acquired, _fields(store.lock_holder(KEY)))


def test_lock_ending_exactly_now_is_expired(store_factory: Backend) -> None:
    """A lease whose expiry equals ``now`` is over: another owner takes the lock."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    acquired = store.lock_acquire(KEY, BOB, _at(60), _at(120))

    assert (True, BOB) == (acquired, store.lock_holder(KEY).owner)


def test_lock_reacquired_by_its_owner(store_factory: Backend) -> None:
    """The owner re-acquiring an unexpired lock succeeds and moves the expiry."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    acquired = store.lock_acquire(KEY, ALICE, _at(10), _at(70))

    assert (True, (KEY, ALICE, _at(70), "LOCK_HELD")) == (acquired, _fields(store.lock_holder(KEY)))


def test_lock_extended_by_its_owner(store_factory: Backend) -> None:
    """The owner extends its lease; the holder shows the new expiry."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    extended = store.lock_extend(KEY, ALICE, _at(20), _at(80))

    assert (True, (KEY, ALICE, _at(80), "LOCK_HELD")) == (extended, _fields(store.lock_holder(KEY)))


def test_lock_extend_to_the_same_expiry_succeeds(store_factory: Backend) -> None:
    """Extending or re-acquiring without moving the expiry still counts as done (matched rows)."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    results = [
        store.lock_extend(KEY, ALICE, _at(1), _at(60)),
        store.lock_acquire(KEY, ALICE, _at(1), _at(60)),
    ]

    assert ([True, True], _at(60)) == (results, store.lock_holder(KEY).expires_at)


def test_lock_extend_refused_to_another_owner(store_factory: Backend) -> None:
    """Another owner cannot extend the lock; the record is unchanged."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    extended = store.lock_extend(KEY, BOB, _at(20), _at(80))

    assert (False, (KEY, ALICE, _at(60), "LOCK_HELD")) == (
        extended,
        _fields(store.lock_holder(KEY)),
    )


def test_lock_extend_refused_after_takeover(store_factory: Backend) -> None:
    """An owner whose expired lock was taken over cannot extend it any more."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))
    store.lock_acquire(KEY, BOB, _at(61), _at(121))

    extended = store.lock_extend(KEY, ALICE, _at(62), _at(122))

    assert (False, (KEY, BOB, _at(121), "LOCK_HELD")) == (
        extended,
        _fields(store.lock_holder(KEY)),
    )


def test_lock_extend_refused_without_a_record(store_factory: Backend) -> None:
    """Extending a lock that nobody holds fails and creates nothing."""
    store = _ready(store_factory)

    extended = store.lock_extend(KEY, ALICE, T0, _at(60))

    assert (False, None) == (extended, store.lock_holder(KEY))


def test_lock_release_by_another_owner_leaves_the_record(store_factory: Backend) -> None:
    """Releasing someone else's lock is a no-op, not an error."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    store.lock_release(KEY, BOB)

    assert (KEY, ALICE, _at(60), "LOCK_HELD") == _fields(store.lock_holder(KEY))


def test_lock_release_by_its_owner_frees_the_key(store_factory: Backend) -> None:
    """After the owner releases, nobody holds the key and another owner takes it at once."""
    store = _ready(store_factory)
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    store.lock_release(KEY, ALICE)
    holder_after_release = store.lock_holder(KEY)
    bob_acquired = store.lock_acquire(KEY, BOB, _at(1), _at(61))

    assert (None, True) == (holder_after_release, bob_acquired)


def test_lock_keys_are_independent(store_factory: Backend) -> None:
    """Two keys are two locks: each has its own holder."""
    store = _ready(store_factory)

    acquired = [
        store.lock_acquire("pipeline-1", ALICE, T0, _at(60)),
        store.lock_acquire("pipeline-2", BOB, T0, _at(30)),
    ]

    assert ([True, True], ALICE, BOB) == (
        acquired,
        store.lock_holder("pipeline-1").owner,
        store.lock_holder("pipeline-2").owner,
    )


# -- Lease on a real store, real time --------------------------------------------------------

LEASE = timedelta(seconds=0.3)
RETRY = timedelta(seconds=0.05)


def _lease(store: Any, owner: str, **options: Any) -> Lease:
    options.setdefault("lease", LEASE)
    options.setdefault("retry", RETRY)
    options.setdefault("wait", timedelta(seconds=5))
    return Lease(store, key=KEY, owner=owner, **options)


def test_lease_waiter_acquires_when_the_holder_releases(store_factory: Backend) -> None:
    """A waiting owner gets the lock once the holder releases it, not before."""
    holder = _lease(_ready(store_factory), ALICE)
    waiter = _lease(_ready(store_factory), BOB)
    holder.acquire()
    releaser = threading.Timer(0.2, holder.release)
    releaser.start()

    started = time.monotonic()
    waiter.acquire()
    waited = time.monotonic() - started
    releaser.join()
    owner = waiter.store.lock_holder(KEY).owner
    waiter.release()

    assert (BOB, True) == (owner, 0.15 <= waited < 3), f"waited {waited:.2f}s"


def test_lease_waiter_takes_over_an_expired_lease(store_factory: Backend) -> None:
    """A holder that stopped extending (a dead runner) loses the lock once its lease ends."""
    dead = _lease(_ready(store_factory), ALICE, heartbeat=False)
    waiter = _lease(_ready(store_factory), BOB)
    dead.acquire()

    started = time.monotonic()
    waiter.acquire()
    waited = time.monotonic() - started
    owner = waiter.store.lock_holder(KEY).owner
    waiter.release()

    assert (BOB, True) == (owner, 0.2 <= waited < 3), f"waited {waited:.2f}s"


def test_lease_heartbeat_keeps_a_waiter_out(store_factory: Backend) -> None:
    """A live holder's heartbeat outlasts its lease, so a waiter gives up naming the holder."""
    holder = _lease(_ready(store_factory), ALICE, lease=timedelta(seconds=0.45))
    waiter = _lease(_ready(store_factory), BOB, wait=timedelta(seconds=1.0))
    holder.acquire()
    try:
        with pytest.raises(LockError) as caught:
            waiter.acquire()
        holder.ensure()
    finally:
        holder.release()

    assert (ALICE, True) == (caught.value.holder, ALICE in str(caught.value))


# -- SQL only --------------------------------------------------------------------------------


@contextmanager
def _statements(store: SqlAuditStore) -> Iterator[list[str]]:
    """Record the SQL statements the store sends, transaction control left out."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(TX_CONTROL):
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def _store_tables(store: SqlAuditStore) -> list[Table]:
    """Every table the store defines (history, lock, and any it keeps beside them)."""
    return list(store.audit.metadata.sorted_tables)


@pytest.mark.parametrize("missing", ["every", "audit", "lock"])
def test_without_auto_create_a_missing_table_is_named(
    sql_store_factory: SqlBackend, missing: str
) -> None:
    """``auto_create=False`` creates nothing and names a table that is missing."""
    store = sql_store_factory(auto_create=False)
    wanted = sql_store_factory.name(missing)
    absent = [t for t in _store_tables(store) if missing == "every" or t.name == wanted]
    for table in _store_tables(store):
        if table not in absent:
            table.create(store.engine)

    with pytest.raises(AuditStoreError) as caught:
        store.initialize()

    named = [t.name for t in absent if f"'{t.name}'" in str(caught.value)]
    assert (True, False) == (bool(named), store.is_initialized()), str(caught.value)


@pytest.mark.parametrize(
    "sql_store_factory",
    [
        pytest.param("postgresql", marks=pytest.mark.servers),
        pytest.param("mariadb", marks=pytest.mark.servers),
    ],
    indirect=True,
)
def test_initialize_completes_when_another_runner_is_midway(
    sql_store_factory: SqlBackend,
) -> None:
    """A runner initialising while another one creates the same tables still succeeds.

    Here the other runner creates the audit table between our existence check and our CREATE.
    MariaDB commits each CREATE TABLE on its own, so another runner's half-done initialisation
    is visible in just this way. (SQLite serialises initialisation behind its write lock, so
    the interleaving cannot happen there.)
    """
    other = sql_store_factory()
    store = sql_store_factory()

    def other_runner_creates_audit_table(*args: Any, **kwargs: Any) -> None:
        other.audit.create(other.engine, checkfirst=True)

    event.listen(store.audit, "before_create", other_runner_creates_audit_table)
    store.initialize()

    assert (True, True) == (store.is_initialized(), other.is_initialized())


@pytest.mark.parametrize("auto_create", [True, False], ids=["auto-create", "validate-only"])
def test_a_table_with_other_columns_is_refused_naming_the_missing_ones(
    sql_store_factory: SqlBackend, auto_create: bool
) -> None:
    """A same-named table of another shape is reported with the columns it lacks."""
    table = sql_store_factory.audit_table
    with sql_store_factory.engine().begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, payload VARCHAR(20))"))
    store = sql_store_factory(auto_create=auto_create)
    if not auto_create:
        store.lock.create(store.engine)

    with pytest.raises(AuditStoreError) as caught:
        store.initialize()

    message = str(caught.value)
    named = [column for column in ("execution_id", "change_id", "state") if column in message]
    assert (True, ["execution_id", "change_id", "state"]) == (f"'{table}'" in message, named)


@pytest.mark.parametrize("reader", ["read_latest", "read_history"])
def test_a_row_with_an_unknown_state_is_reported_naming_its_change(
    sql_store_factory: SqlBackend, reader: str
) -> None:
    """A record the store cannot map back to the model raises `AuditStoreError` naming it."""
    store = sql_store_factory()
    store.initialize()
    store.append(_entry(change_id="good-change"))
    store.append(_entry(change_id="hand-edited-change"))
    with store.engine.begin() as conn:  # a person "fixed" the record by hand
        for table in _store_tables(store):
            if "state" in table.c:
                edit = table.update().where(table.c.change_id == "hand-edited-change")
                conn.execute(edit.values(state="HALF_DONE"))

    with pytest.raises(AuditStoreError) as caught:
        getattr(store, reader)()

    assert "hand-edited-change" in str(caught.value)


def test_read_latest_is_one_statement(sql_store_factory: SqlBackend) -> None:
    """The latest snapshot is one query, however long the history."""
    store = sql_store_factory()
    store.initialize()
    for i in range(5):
        store.append(_entry(execution_id=f"e{i}", change_id=f"c{i % 2}", created_at=_at(i)))

    with _statements(store) as seen:
        latest = store.read_latest()

    assert (1, {"c0", "c1"}) == (len(seen), set(latest))


@pytest.mark.parametrize(
    "sql_store_factory",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)],
    indirect=True,
)
def test_lock_acquire_is_one_statement_where_the_dialect_has_an_upsert(
    sql_store_factory: SqlBackend,
) -> None:
    """On SQLite and PostgreSQL, taking, refusing and taking over a lock is one statement each."""
    store = sql_store_factory()
    store.initialize()
    attempts = [
        (ALICE, T0, _at(60)),  # free
        (BOB, _at(1), _at(61)),  # refused
        (BOB, _at(61), _at(121)),  # taken over
    ]

    counts = []
    for owner, now, expires in attempts:
        with _statements(store) as seen:
            store.lock_acquire(KEY, owner, now, expires)
        counts.append(len(seen))

    assert [1, 1, 1] == counts


def test_lock_extend_is_one_statement(sql_store_factory: SqlBackend) -> None:
    """Extending a lease is one conditional statement on every SQL dialect."""
    store = sql_store_factory()
    store.initialize()
    store.lock_acquire(KEY, ALICE, T0, _at(60))

    with _statements(store) as seen:
        store.lock_extend(KEY, ALICE, _at(1), _at(61))

    assert 1 == len(seen)


def test_reads_do_not_wait_for_an_open_write_transaction(sql_store_factory: SqlBackend) -> None:
    """While a change's transaction is open, a planner or sensor still reads committed history.

    A TX_SHARED change holds a write transaction on the audit database for as long as it runs;
    another runner's plan and every sensor poke must not wait for it (or fail when it is long).
    """
    writer = sql_store_factory()
    writer.initialize()
    committed = _entry(change_id="committed")
    writer.append(committed)
    reader = sql_store_factory()
    reader.initialize()

    with ThreadPoolExecutor(max_workers=1) as pool, writer.engine.begin() as conn:
        writer.append(_entry(change_id="uncommitted"), transaction=conn)
        future = pool.submit(reader.read_latest)
        try:
            latest = future.result(timeout=1.5)
        except FutureTimeout:
            latest = None  # the reader is blocked; ending the transaction releases it

    assert {"committed": committed} == (dict(latest) if latest is not None else None)


@pytest.mark.parametrize(
    ("require", "url"),
    [
        pytest.param(
            servers.require_postgresql,
            "postgresql+psycopg://postgres:s3cretPW@127.0.0.1:5432/nope_db_xyz",
            id="postgresql",
            marks=pytest.mark.servers,
        ),
        pytest.param(
            servers.require_mariadb,
            "mysql+pymysql://root:s3cretPW@127.0.0.1:3306/nope_db_xyz",
            id="mariadb",
            marks=pytest.mark.servers,
        ),
    ],
)
def test_password_never_appears_in_description_or_errors(
    require: Callable[[], str], url: str
) -> None:
    """A store the server refuses says so without ever showing the URL's password."""
    require()  # the server answers, so the refusal below comes from it
    store = SqlAuditStore(url, engine_options={"connect_args": {"connect_timeout": 2}})
    texts = [store.description]
    try:
        for call in (store.initialize, store.read_latest, lambda: store.lock_holder(KEY)):
            with pytest.raises(AuditStoreError) as caught:
                call()
            texts.append(str(caught.value))
            texts.append("".join(traceback.format_exception(caught.value)))
    finally:
        store.close()

    assert (True, []) == (
        "nope_db_xyz" in texts[1],
        [t for t in texts if "s3cretPW" in t],
    )
