"""One racing runner: import everything, say ready, wait for the start file, run, report JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from flamingock_provider.stores.sql import SqlAuditStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload


def main(url: str, prefix: str, root: str, package: str, start_file: str) -> None:
    sys.path.insert(0, root)
    pipeline = workload.pipeline_for(package)
    store = SqlAuditStore(url, audit_table=f"{prefix}audit", lock_table=f"{prefix}lock")
    print("ready", flush=True)
    start = Path(start_file)
    while not start.exists():
        time.sleep(0.001)
    result = workload.run(store, pipeline)
    print(json.dumps({"applied": result.applied, "end": time.time()}), flush=True)
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:6])
