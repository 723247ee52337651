"""The pipeline lock as a lease: acquire by waiting, keep by heartbeat, check before each change.

Whose clock decides expiry: the runner's (``clock``), passed to the store with every call.
Hosts are assumed NTP-synchronised to well within `SAFETY_MARGIN`; `ensure()` treats the lease
as lost that much before it really ends, so a runner never starts a change on a lease another
host could already consider expired.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pendulum

from flamingock_provider.engine.errors import FlamingockError, LockError
from flamingock_provider.engine.store import AuditStore

DEFAULT_KEY = "DEFAULT_KEY"
DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_WAIT = timedelta(seconds=180)
DEFAULT_RETRY = timedelta(seconds=1)
SAFETY_MARGIN_FRACTION = 0.1
"""Part of the lease kept in reserve for clock skew and the time a change takes to start."""

Clock = Callable[[], datetime]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The default clock: timezone-aware UTC."""
    return pendulum.now("UTC")


def new_owner(name: str = "flamingock") -> str:
    """Owner id ``<name>@<hostname>#<uuid>``: unique per runner, readable in messages."""
    return f"{name}@{socket.gethostname()}#{uuid.uuid4()}"


class Lease:
    """A held (or wanted) lock on ``key``; not re-entrant, one per run.

    `acquire` waits out contention up to ``wait``; a background thread extends the lease every
    ``lease / 3``; `ensure` raises `LockError` once the lease is lost or about to end.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        key: str = DEFAULT_KEY,
        owner: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
        wait: timedelta = DEFAULT_WAIT,
        retry: timedelta = DEFAULT_RETRY,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        heartbeat: bool = True,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError(f"lock lease must be positive, got {lease}")
        self.store = store
        self.key = key
        self.owner = owner or new_owner()
        self.lease = lease
        self.wait = wait
        self.retry = retry
        self._clock = clock
        self._sleep = sleep
        self._heartbeat_enabled = heartbeat
        self._valid_until: datetime | None = None
        self._lost_reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._valid_until is not None and self._lost_reason is None

    def acquire(self, give_up: Callable[[], bool] | None = None) -> bool:
        """Take the lock, waiting while another owner holds an unexpired lease.

        :param give_up: asked after each refused attempt; when it answers True the wait ends
            without the lock (the runner asks "has the holder already done our work?").
        :returns: True when held, False when ``give_up`` ended the wait.
        :raises LockError: when ``wait`` elapses first; names the holder and its expiry.
        """
        started = self._clock()
        while True:
            now = self._clock()
            if self.store.lock_acquire(self.key, self.owner, now, now + self.lease):
                with self._mutex:
                    self._valid_until = now + self.lease
                    self._lost_reason = None
                self._start_heartbeat()
                return True
            if give_up is not None and give_up():
                return False
            holder = self.store.lock_holder(self.key)
            waited = now - started
            if waited >= self.wait:
                who = holder.owner if holder else "unknown"
                until = holder.expires_at.isoformat() if holder else "unknown"
                raise LockError(
                    f"Lock '{self.key}' on {self.store.description} not acquired after "
                    f"{waited.total_seconds():.1f}s: held by {who} until {until}. Another run "
                    "is in progress; wait for it, or raise lock_wait.",
                    key=self.key,
                    holder=holder.owner if holder else None,
                    expires_at=holder.expires_at if holder else None,
                )
            pause = self.retry
            if holder is not None:
                # Wake when the holder's lease ends if that is sooner than the retry interval.
                pause = min(pause, max(holder.expires_at - now, timedelta(milliseconds=10)))
            pause = min(pause, max(self.wait - waited, timedelta(milliseconds=10)))
            self._sleep(pause.total_seconds())

    def extend(self) -> bool:
        """Extend the lease once; record a loss when the record is no longer ours.

        A store error is logged and tolerated: `ensure` still fails once the last good lease
        runs out, so a transient outage costs nothing and a long one stops the run.
        """
        now = self._clock()
        try:
            extended = self.store.lock_extend(self.key, self.owner, now, now + self.lease)
        except FlamingockError as err:
            log.warning("Could not extend lock '%s': %s", self.key, err)
            return False
        with self._mutex:
            if extended:
                self._valid_until = now + self.lease
            else:
                holder = self.store.lock_holder(self.key)
                self._lost_reason = (
                    f"the lock record now belongs to {holder.owner}"
                    if holder
                    else "the lock record is gone"
                )
        return extended

    def ensure(self) -> None:
        """Raise `LockError` unless the lease is still ours with a safety margin to spare."""
        with self._mutex:
            lost, valid_until = self._lost_reason, self._valid_until
        if valid_until is None:
            raise LockError(f"Lock '{self.key}' is not held", key=self.key)
        if lost is None:
            margin = self.lease * SAFETY_MARGIN_FRACTION
            if self._clock() >= valid_until - margin:
                lost = f"the lease ran out at {valid_until.isoformat()} without being extended"
        if lost is not None:
            raise LockError(
                f"Lock '{self.key}' was lost ({lost}); stopping before the next change. "
                "Another runner may now hold it; its run will continue the pipeline.",
                key=self.key,
            )

    def release(self) -> None:
        """Stop the heartbeat and delete our lock record; best effort, never raises."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease.total_seconds())
            self._thread = None
        if self._valid_until is None:
            return
        try:
            self.store.lock_release(self.key, self.owner)
        except Exception as err:  # never mask the error that ended the run
            log.warning("Could not release lock '%s' (it expires by itself): %s", self.key, err)
        finally:
            with self._mutex:
                self._valid_until = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _start_heartbeat(self) -> None:
        if not self._heartbeat_enabled:
            return
        self._stop.clear()
        interval = self.lease.total_seconds() / 3
        self._thread = threading.Thread(
            target=self._beat, args=(interval,), name=f"flamingock-lock-{self.key}", daemon=True
        )
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if not self.extend() and self._lost_reason is not None:
                    return
            except Exception as err:  # a heartbeat must not die silently on a surprise
                log.warning("Lock heartbeat for '%s' failed: %s", self.key, err)
