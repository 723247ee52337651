"""The measurements, each comparing two figures taken side by side in the same run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import workload

from flamingock_provider.engine.issues import scan
from flamingock_provider.engine.lock import Lease
from flamingock_provider.engine.model import AuditEntry

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def median_time(fn: Callable[[], Any], repeat: int = 5, budget: float = 5.0) -> float:
    """The median of ``repeat`` timings; fewer once they took ``budget`` seconds (a slow
    stand-in: mongomock-ng sorts 100,000 documents in Python for over a minute)."""
    samples: list[float] = []
    while len(samples) < repeat and (not samples or sum(samples) < budget):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def apply_vs_floor(backend: Any, package: str, changes: int) -> dict[str, Any]:
    """Apply ``changes`` no-op changes; the same audit writes with the raw driver."""
    pipeline = workload.pipeline_for(package)
    best_run, best_floor = float("inf"), float("inf")
    trips = floor_trips = 0
    history: list[AuditEntry] = []
    for _ in range(2):
        store = backend.store()
        store.initialize()
        with backend.round_trips(store) as counter:
            started = time.perf_counter()
            result = workload.run(store, pipeline)
            elapsed = time.perf_counter() - started
        assert len(result.applied) == changes, result.summary()
        best_run, trips = min(best_run, elapsed), counter.count
        history = store.read_history()
        floor_seconds, floor_trips = backend.floor(history)
        best_floor = min(best_floor, floor_seconds)
    return {
        "run_s": best_run,
        "floor_s": best_floor,
        "ratio": best_run / best_floor,
        "trips_per_change": trips / changes,
        "floor_trips_per_change": floor_trips / changes,
        "store": store,
        "pipeline": pipeline,
    }


def rerun(backend: Any, applied_store: Any, pipeline: Any) -> dict[str, Any]:
    """A new runner on a store where everything is applied: round trips, time, lock."""
    store = backend.store(prefix=backend.prefix_of(applied_store))
    with backend.round_trips(store) as counter:
        started = time.perf_counter()
        result = workload.run(store, pipeline)
        elapsed = time.perf_counter() - started
    return {
        "trips": counter.count,
        "s": elapsed,
        "lock_taken": result.lock_taken,
        "skipped": len(result.skipped),
    }


def _older_copies(entries: list[AuditEntry], copies: int) -> list[AuditEntry]:
    """``copies`` older executions of every entry (a day apart, fresh execution ids)."""
    return [
        replace(e, execution_id=str(uuid.uuid4()), created_at=e.created_at - timedelta(days=n))
        for n in range(1, copies + 1)
        for e in entries
    ]


def _grow_history(backend: Any, store: Any, copies: int) -> int:
    """Add ``copies`` older executions of every entry straight into the history; its length.

    Older entries never change a change's latest entry, so the latest record stays right.
    """
    entries = store.read_history()
    older = _older_copies(entries, copies)
    backend.add_history(store, older)
    return len(entries) + len(older)


def planning_growth(backend: Any, store: Any) -> dict[str, Any]:
    """read_latest at a fixed number of changes, history x1 then x10."""
    before_len = len(store.read_history())
    before = median_time(store.read_latest)
    after_len = _grow_history(backend, store, 9)
    after = median_time(store.read_latest)
    return {"history": (before_len, after_len), "s": (before, after), "ratio": after / before}


def sensor_poke(backend: Any, package: str) -> dict[str, Any]:
    """One sensor check (scan) with ~100 history entries, then ~100,000."""
    store = backend.store()
    workload.run(store, workload.pipeline_for(package))
    small_len = len(store.read_history())
    small = median_time(lambda: scan(store), repeat=7)
    copies = max(1, 100_000 // small_len - 1)
    big_len = _grow_history(backend, store, copies)
    big = median_time(lambda: scan(store), repeat=7)
    return {"history": (small_len, big_len), "s": (small, big), "ratio": big / small}


def race(
    backend: Any, root: str, package: str, changes: int, processes: int, retry: float = 0.0
) -> dict[str, Any]:
    """``processes`` runners start together on one fresh store; wall time from the start."""
    prefix = f"r{uuid.uuid4().hex[:8]}_"
    start_file = Path(tempfile.mkdtemp()) / "go"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}"}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "race_worker.py"),
                json.dumps(backend.spec()),
                prefix,
                root,
                package,
                str(start_file),
                str(retry) if retry else "",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    started = time.time()
    start_file.write_text("go")
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, f"a racing runner failed ({worker.returncode})"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    store = backend.store(prefix=prefix)
    applied = [e.change_id for e in store.read_history() if e.state.value == "APPLIED"]
    exactly_once = len(applied) == changes == len(set(applied))
    lock_left = store.lock_holder("DEFAULT_KEY") is not None
    return {
        "wall_s": max(r["end"] for r in reports) - started,
        "exactly_once": exactly_once,
        "lock_left": lock_left,
    }


def lock_handoff(backend: Any, samples: int = 7) -> dict[str, Any]:
    """Time from the holder's release to the waiter holding the lock (retry interval 1 s)."""
    prefix = f"h{uuid.uuid4().hex[:8]}_"
    holder_store, waiter_store = backend.store(prefix), backend.store(prefix)
    holder_store.initialize()
    gaps = []
    for i in range(samples):
        holder = Lease(holder_store, heartbeat=False)
        holder.acquire()
        waiter = Lease(waiter_store, heartbeat=False, wait=timedelta(seconds=30))
        got: list[float] = []

        def wait(w: Lease = waiter, out: list[float] = got) -> None:
            w.acquire()
            out.append(time.perf_counter())

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.3 + 0.1 * i)  # release at different points of the waiter's retry cycle
        released = time.perf_counter()
        holder.release()
        thread.join(timeout=30)
        gaps.append(got[0] - released)
        waiter.release()
    return {"median_s": statistics.median(gaps), "max_s": max(gaps), "retry_s": 1.0}
