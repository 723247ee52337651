"""Run one pipeline in a process of its own: the racing and crash scenarios of the SQL suite.

    python runner_worker.py '<json spec>'

The spec (built by test_runner_sql.py) holds ``sys_path`` (where the generated packages live),
``stages`` ([name, package] pairs), ``store`` (url, audit_table, lock_table), ``targets`` (id,
url, markers, marker_table), ``lease``/``wait``/``retry`` in seconds, optionally ``ready_file``
and ``go_file`` (a start barrier: write the first, wait for the second) and
``die_before_applied`` (SIGKILL this process when the runner is about to write an ``APPLIED``
entry: a crash after the commit, before the audit store heard of it).

Prints the run summary as JSON; exits 0 on success, 1 on a FlamingockError.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def main(spec: dict[str, Any]) -> int:
    sys.path.insert(0, spec["sys_path"])
    from runner_kit import run_pipeline

    from flamingock_provider.changes import Stage
    from flamingock_provider.engine.errors import FlamingockError
    from flamingock_provider.engine.model import AuditEntry, AuditState
    from flamingock_provider.stores.sql import SqlAuditStore
    from flamingock_provider.targets.sql import SqlTargetSystem

    store = SqlAuditStore(**spec["store"])
    if spec.get("die_before_applied"):
        append = store.append

        def append_or_die(entry: AuditEntry, transaction: object | None = None) -> None:
            if entry.state is AuditState.APPLIED:
                os.kill(os.getpid(), signal.SIGKILL)
            append(entry, transaction)

        store.append = append_or_die  # type: ignore[method-assign]
    targets = [SqlTargetSystem(t.pop("id"), **t) for t in spec["targets"]]
    stages = [Stage(name, package) for name, package in spec["stages"]]
    if spec.get("ready_file"):
        Path(spec["ready_file"]).write_text(str(os.getpid()))
        go = Path(spec["go_file"])
        while not go.exists():
            time.sleep(0.005)
    try:
        result = run_pipeline(
            store, stages, targets, lease=spec["lease"], wait=spec["wait"], retry=spec["retry"]
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
