"""Run one pipeline on DynamoDB in a process of its own: the races of test_dynamodb_runner.py.

    python dynamodb_worker.py '<json spec>'

The spec holds ``sys_path`` (where the generated packages live), ``stages`` ([name, package]
pairs), ``store`` (`DynamoDBAuditStore` keyword arguments), ``target`` (`DynamoDBTargetSystem`
keyword arguments, ``id`` included), ``lease``/``wait``/``retry`` in seconds, and optionally
``ready_file`` and ``go_file`` (a start barrier: write the first, wait for the second).

Prints the run summary as JSON; exits 0 on success, 1 on a FlamingockError.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def main(spec: dict[str, Any]) -> int:
    sys.path.insert(0, spec["sys_path"])
    from runner_kit import run_pipeline

    from flamingock_provider.changes import Stage
    from flamingock_provider.engine.errors import FlamingockError
    from flamingock_provider.stores.dynamodb import DynamoDBAuditStore
    from flamingock_provider.targets.dynamodb import DynamoDBTargetSystem

    store = DynamoDBAuditStore(**spec["store"])
    target = DynamoDBTargetSystem(spec["target"].pop("id"), **spec["target"])
    stages = [Stage(name, package) for name, package in spec["stages"]]
    store.client  # noqa: B018 - build the client before the barrier, not inside the race
    if spec.get("ready_file"):
        Path(spec["ready_file"]).write_text(str(os.getpid()))
        go = Path(spec["go_file"])
        while not go.exists():
            time.sleep(0.005)
    try:
        result = run_pipeline(
            store, stages, [target], lease=spec["lease"], wait=spec["wait"], retry=spec["retry"]
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
