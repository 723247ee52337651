"""The lock lease: wait out contention, extend, notice a loss, release without raising."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest

from flamingock_provider.engine.errors import AuditStoreError, LockError
from flamingock_provider.engine.lock import DEFAULT_KEY, Lease
from flamingock_provider.engine.model import LockRecord


@pytest.fixture
def sleeps() -> list[float]:
    """Every pause the lease asked for, in seconds."""
    return []


@pytest.fixture
def make_lease(recording_store, fake_clock, sleeps):
    """Build a Lease on the fake clock whose ``sleep`` advances that clock (no heartbeat)."""

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        fake_clock.advance(seconds)

    def build(store=None, **options) -> Lease:
        settings = {"owner": "me", "clock": fake_clock, "sleep": sleep, "heartbeat": False}
        settings.update(options)
        return Lease(recording_store if store is None else store, **settings)

    return build


def _hold(store, clock, owner: str = "other", seconds: float = 60, key: str = DEFAULT_KEY):
    """Let ``owner`` take the lock now, for ``seconds``."""
    now = clock()
    assert store.lock_acquire(key, owner, now, now + timedelta(seconds=seconds))


def test_acquire_takes_a_free_lock_at_once(make_lease, recording_store, fake_clock, sleeps):
    """A free lock is taken with one write and no wait; the record expires a lease from now."""
    lease = make_lease(lease=timedelta(seconds=60))

    lease.acquire()

    assert LockRecord(DEFAULT_KEY, "me", fake_clock.at(60)) == recording_store.lock_holder(
        DEFAULT_KEY
    )
    assert lease.held
    assert [] == sleeps
    assert 1 == recording_store.calls["lock_acquire"]


def test_acquire_uses_the_given_key(make_lease, recording_store, fake_clock):
    """Different keys are different locks."""
    _hold(recording_store, fake_clock, key=DEFAULT_KEY)

    make_lease(key="orders").acquire()

    assert "me" == recording_store.lock_holder("orders").owner
    assert "other" == recording_store.lock_holder(DEFAULT_KEY).owner


@pytest.mark.parametrize(
    ("holder_left", "retry", "expected_sleeps"),
    [
        pytest.param(0.3, 1.0, [0.3], id="ends-before-retry"),
        pytest.param(2.5, 1.0, [1.0, 1.0, 0.5], id="ends-between-retries"),
        pytest.param(3.0, 1.0, [1.0, 1.0, 1.0], id="ends-on-a-retry"),
        pytest.param(1.0, 5.0, [1.0], id="long-retry"),
    ],
)
def test_contention_is_waited_out_until_the_holders_lease_ends(
    make_lease, recording_store, fake_clock, sleeps, holder_left, retry, expected_sleeps
):
    """A waiter sleeps the retry interval, or less when the holder's lease ends sooner."""
    _hold(recording_store, fake_clock, seconds=holder_left)
    lease = make_lease(retry=timedelta(seconds=retry), wait=timedelta(seconds=30))

    lease.acquire()

    assert expected_sleeps == pytest.approx(sleeps)
    assert all(pause <= retry for pause in sleeps)
    assert fake_clock.at(holder_left) == fake_clock.now
    assert "me" == recording_store.lock_holder(DEFAULT_KEY).owner


def test_contention_past_wait_raises_naming_holder_and_expiry(
    make_lease, recording_store, fake_clock, sleeps
):
    """When ``wait`` elapses first, LockError names who holds the lock and until when."""
    _hold(recording_store, fake_clock, owner="runner-b@host#1", seconds=10)
    lease = make_lease(wait=timedelta(seconds=2), retry=timedelta(seconds=1))

    with pytest.raises(LockError) as excinfo:
        lease.acquire()

    err = excinfo.value
    expires = fake_clock.at(10)
    assert (DEFAULT_KEY, "runner-b@host#1", expires) == (err.key, err.holder, err.expires_at)
    assert "runner-b@host#1" in str(err)
    assert expires.isoformat() in str(err)
    assert 2.0 == pytest.approx(sum(sleeps))
    assert not lease.held
    assert "runner-b@host#1" == recording_store.lock_holder(DEFAULT_KEY).owner


def test_wait_of_zero_gives_up_after_one_attempt(make_lease, recording_store, fake_clock, sleeps):
    """``wait=0`` tries once and raises without sleeping."""
    _hold(recording_store, fake_clock)
    before = recording_store.calls["lock_acquire"]

    with pytest.raises(LockError, match="held by other"):
        make_lease(wait=timedelta(0)).acquire()

    assert [] == sleeps
    assert 1 == recording_store.calls["lock_acquire"] - before


@pytest.mark.parametrize("lease", [timedelta(0), timedelta(seconds=-1)])
def test_a_lease_must_be_positive(recording_store, lease):
    """A zero or negative lease is refused at construction."""
    with pytest.raises(ValueError, match="lease must be positive"):
        Lease(recording_store, lease=lease, heartbeat=False)


def test_extend_moves_the_expiry(make_lease, recording_store, fake_clock):
    """extend() sets expiry to now + lease, so the lease stays valid past its first end."""
    lease = make_lease(lease=timedelta(seconds=60))
    lease.acquire()
    fake_clock.advance(30)

    assert lease.extend()

    assert fake_clock.at(90) == recording_store.lock_holder(DEFAULT_KEY).expires_at
    fake_clock.advance(50)  # t=80: past the first lease, within the extended one
    lease.ensure()


def test_a_lease_taken_over_cannot_be_extended_or_ensured(make_lease, recording_store, fake_clock):
    """After another owner takes an expired lease, extend() is False and ensure() raises."""
    lease = make_lease(lease=timedelta(seconds=60))
    lease.acquire()
    fake_clock.advance(61)
    _hold(recording_store, fake_clock, owner="thief")

    assert not lease.extend()

    with pytest.raises(LockError, match="belongs to thief") as excinfo:
        lease.ensure()
    assert DEFAULT_KEY == excinfo.value.key
    assert not lease.held
    assert "thief" == recording_store.lock_holder(DEFAULT_KEY).owner


@pytest.mark.parametrize(
    ("elapsed", "valid"),
    [(0, True), (30, True), (53.9, True), (54, False), (59.9, False), (60, False), (500, False)],
)
def test_ensure_keeps_a_ten_percent_safety_margin(make_lease, fake_clock, elapsed, valid):
    """Without an extend, ensure() fails once the clock reaches expiry minus 10% of the lease."""
    lease = make_lease(lease=timedelta(seconds=60))
    lease.acquire()
    fake_clock.advance(elapsed)

    if valid:
        lease.ensure()
    else:
        with pytest.raises(LockError, match="ran out"):
            lease.ensure()


def test_ensure_before_acquire_raises(make_lease):
    """A lease never acquired is not held."""
    with pytest.raises(LockError, match="not held"):
        make_lease().ensure()


def test_a_store_error_while_extending_is_tolerated_until_the_lease_ends(
    make_lease, recording_store, fake_clock, monkeypatch
):
    """A failed extend is logged, not fatal: ensure() holds until the last good lease runs out."""
    lease = make_lease(lease=timedelta(seconds=60))
    lease.acquire()

    def broken(*args):
        raise AuditStoreError("store unreachable")

    monkeypatch.setattr(recording_store, "lock_extend", broken)
    fake_clock.advance(20)

    assert not lease.extend()
    lease.ensure()
    fake_clock.advance(34)  # t=54: the margin of the original lease
    with pytest.raises(LockError):
        lease.ensure()


def test_release_deletes_our_record(make_lease, recording_store):
    """release() removes the lock record and the lease is no longer held."""
    lease = make_lease()
    lease.acquire()

    lease.release()

    assert recording_store.lock_holder(DEFAULT_KEY) is None
    assert not lease.held


def test_release_leaves_another_owners_record(make_lease, recording_store, fake_clock):
    """release() after a takeover does not delete the new holder's record."""
    lease = make_lease(lease=timedelta(seconds=60))
    lease.acquire()
    fake_clock.advance(61)
    _hold(recording_store, fake_clock, owner="next")

    lease.release()

    assert "next" == recording_store.lock_holder(DEFAULT_KEY).owner


def test_release_without_acquire_touches_nothing(make_lease, recording_store, fake_clock):
    """Releasing a lease that was never acquired makes no store call."""
    _hold(recording_store, fake_clock)

    make_lease().release()

    assert 0 == recording_store.calls["lock_release"]
    assert "other" == recording_store.lock_holder(DEFAULT_KEY).owner


@pytest.mark.parametrize("error", [AuditStoreError("gone"), RuntimeError("driver bug")], ids=repr)
def test_release_never_raises(make_lease, recording_store, monkeypatch, caplog, error):
    """A store that fails to delete the record is logged; release() itself never raises."""
    lease = make_lease()
    lease.acquire()

    def broken(key, owner):
        raise error

    monkeypatch.setattr(recording_store, "lock_release", broken)

    with caplog.at_level(logging.WARNING, logger="flamingock_provider.engine.lock"):
        lease.release()

    assert not lease.held
    assert any("Could not release lock" in r.getMessage() for r in caplog.records)


def test_context_manager_acquires_and_releases(make_lease, recording_store):
    """``with lease:`` holds the lock inside the block only."""
    lease = make_lease()

    with lease:
        assert "me" == recording_store.lock_holder(DEFAULT_KEY).owner

    assert recording_store.lock_holder(DEFAULT_KEY) is None


def test_heartbeat_keeps_a_short_lease_alive_in_real_time(recording_store):
    """With the heartbeat on, a 0.3 s lease survives 0.8 s of work and is released after."""
    lease = Lease(recording_store, owner="me", lease=timedelta(seconds=0.3))
    lease.acquire()
    try:
        time.sleep(0.8)

        holder = recording_store.lock_holder(DEFAULT_KEY)
        assert "me" == holder.owner
        lease.ensure()
    finally:
        lease.release()

    assert recording_store.lock_holder(DEFAULT_KEY) is None
