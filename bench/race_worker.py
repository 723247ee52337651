"""One racing runner: import everything, say ready, wait for the start file, run, report JSON.

Usage: ``race_worker.py <backend spec JSON> <prefix> <package root> <package> <start file>
[<lock retry seconds>]``;
the store is rebuilt from `backends.Backend.spec` (a shared store: SQL, DynamoDB Local).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload
from backends import store_from_spec


def main(spec: str, prefix: str, root: str, package: str, start_file: str, retry: str = "") -> None:
    sys.path.insert(0, root)
    pipeline = workload.pipeline_for(package)
    store = store_from_spec(json.loads(spec), prefix)
    print("ready", flush=True)
    start = Path(start_file)
    while not start.exists():
        time.sleep(0.001)
    options = {"lock_retry": timedelta(seconds=float(retry))} if retry else {}
    result = workload.run(store, pipeline, **options)
    print(json.dumps({"applied": result.applied, "end": time.time()}), flush=True)
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:7])
