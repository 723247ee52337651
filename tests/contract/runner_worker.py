"""Run one pipeline in a process of its own: the racing and crash scenarios of the runner suites.

    python runner_worker.py '<json spec>'

The spec (built by `runner_scenarios`) holds:

- ``sys_path``: where the generated packages live; ``stages``: [name, package] pairs;
- ``store``: the audit store's keyword arguments plus ``kind`` (``sql``, the default, or
  ``dynamodb``); ``targets``: a list of the same for the target systems, ``id`` included;
- ``lease``/``wait``/``retry`` in seconds, optionally ``heartbeat`` (default true) and
  ``owner`` (the lock owner; by default a new one per process);
- optionally ``ready_file`` and ``go_file``: a start barrier (write the first, wait for the
  second);
- optionally ``die``: ``{"when": "after STARTED" | "before APPLIED", "change": id}``: SIGKILL
  this process right after the runner wrote the change's ``STARTED`` entry, or right before it
  writes its ``APPLIED`` entry (``change`` null: any change).

Prints the run summary as JSON; exits 0 on success, 1 on a FlamingockError (its class name and
message on stderr).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def build_store(spec: dict[str, Any]) -> Any:
    """The audit store a spec describes."""
    options = dict(spec)
    kind = options.pop("kind", "sql")
    if kind == "dynamodb":
        from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

        return DynamoDBAuditStore(**options)
    from flamingock_provider.stores.sql import SqlAuditStore

    return SqlAuditStore(**options)


def build_target(spec: dict[str, Any]) -> Any:
    """The target system a spec describes."""
    options = dict(spec)
    kind = options.pop("kind", "sql")
    target_id = options.pop("id")
    if kind == "dynamodb":
        from flamingock_provider.targets.dynamodb import DynamoDBTargetSystem

        return DynamoDBTargetSystem(target_id, **options)
    from flamingock_provider.targets.sql import SqlTargetSystem

    return SqlTargetSystem(target_id, **options)


def die_at(store: Any, when: str, change_id: str | None) -> None:
    """Make ``store`` SIGKILL this process around one audit write (a crash at that point)."""
    from flamingock_provider.engine.model import AuditEntry, AuditState

    append = store.append

    def append_or_die(entry: AuditEntry, transaction: object | None = None) -> None:
        ours = change_id is None or entry.change_id == change_id
        if ours and when == "before APPLIED" and entry.state is AuditState.APPLIED:
            os.kill(os.getpid(), signal.SIGKILL)
        append(entry, transaction)
        if ours and when == "after STARTED" and entry.state is AuditState.STARTED:
            os.kill(os.getpid(), signal.SIGKILL)

    store.append = append_or_die


def main(spec: dict[str, Any]) -> int:
    sys.path.insert(0, spec["sys_path"])
    from runner_kit import run_pipeline

    from flamingock_provider.changes import Stage
    from flamingock_provider.engine.errors import FlamingockError

    store = build_store(spec["store"])
    if spec.get("die"):
        die_at(store, spec["die"]["when"], spec["die"].get("change"))
    targets = [build_target(t) for t in spec["targets"]]
    stages = [Stage(name, package) for name, package in spec["stages"]]
    if spec.get("ready_file"):
        Path(spec["ready_file"]).write_text(str(os.getpid()))
        go = Path(spec["go_file"])
        while not go.exists():
            time.sleep(0.005)
    try:
        result = run_pipeline(
            store,
            stages,
            targets,
            lease=spec["lease"],
            wait=spec["wait"],
            retry=spec["retry"],
            owner=spec.get("owner"),
            heartbeat=spec.get("heartbeat", True),
        )
    except FlamingockError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
