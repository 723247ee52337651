"""Contention: eight processes start the same 200-change pipeline at the same instant.

Run on every audit store that separate processes can share: SQLite (one file), PostgreSQL,
MariaDB and DynamoDB Local. The in-process stand-ins (the memory store, mongomock-ng, the
Couchbase fake) exist inside a single interpreter, so processes cannot race on them; their lock
is covered by the contract suite's threaded `Lease` tests instead.

The pipeline has two stages of 100 changes: the first changes the audit store's own database
(`TX_SHARED`), the second another database (`TX_SEPARATE_WITH_MARKER`), where nothing but the
pipeline lock keeps two processes from running the same change. The audit store's tables do not
exist yet, so the processes also race to create them.
"""

from __future__ import annotations

import json
from collections import Counter

from runner_kit import ChangeSource
from runner_scenarios import WORKER_TIMEOUT, DynamoDBScenario, SqlScenario, overlaps, wait_for

from flamingock_provider.engine.lock import DEFAULT_KEY
from flamingock_provider.engine.model import AuditState

PROCESSES = 8
CHANGES_PER_STAGE = 100


def test_eight_processes_apply_200_changes_exactly_once_and_all_succeed(
    shared_world: SqlScenario | DynamoDBScenario,
) -> None:
    """Each change is applied once, never two at a time; every process exits 0; lock released.

    The processes wait at a start barrier (a file) so they all begin together; waiters find the
    work done by the holder and skip it, so none fails.
    """
    world = shared_world
    numbers = range(1, CHANGES_PER_STAGE + 1)
    shared_ids = [f"shared-{n:03d}" for n in numbers]
    separate_ids = [f"separate-{n:03d}" for n in numbers]
    stages = [
        world.stage(*(ChangeSource(i, target="shared") for i in shared_ids), name="shared"),
        world.stage(*(ChangeSource(i, target="separate") for i in separate_ids), name="separate"),
    ]
    targets = [
        world.shared_target(target_id="shared"),
        world.separate_target(target_id="separate"),
    ]
    go = world.tmp_path / "go"
    ready = [world.tmp_path / f"ready-{n}" for n in range(PROCESSES)]

    procs = [
        world.worker(stages, targets, wait=120.0, retry=0.2, ready_file=str(r), go_file=str(go))
        for r in ready
    ]
    wait_for(ready, *procs)
    go.touch()
    outputs = [p.communicate(timeout=WORKER_TIMEOUT * 2) for p in procs]

    ids = shared_ids + separate_ids
    assert [0] * PROCESSES == [p.returncode for p in procs], [err for _, err in outputs]
    summaries = [json.loads(out) for out, _ in outputs]
    assert dict.fromkeys(ids, 1) == dict(Counter(i for s in summaries for i in s["applied"]))
    assert dict.fromkeys(ids, 1) == world.counts_in(targets)
    assert [] == overlaps(world.executions_in(targets))
    applied = [e for e in world.history() if e.state is AuditState.APPLIED]
    assert ids == [e.change_id for e in applied]
    assert ["TX_SHARED"] * 100 + ["TX_SEPARATE_WITH_MARKER"] * 100 == [
        e.tx_strategy.value for e in applied
    ]
    assert None is world.store().lock_holder(DEFAULT_KEY)
