"""Run the benchmarks side by side and write docs/benchmarks.md.

Usage: ``python bench/run.py [--changes 1000] [--race-changes 200] [--processes 8]``
(``make bench``). Every figure is a ratio or a count taken in this one run; the script exits
non-zero only when a benchmark cannot run, never because a figure misses its goal.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends
import compare
import measure
import report
import workload

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "docs" / "benchmarks.md"
ALEMBIC_DATABASES = ("SQLite", "PostgreSQL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--race-changes", type=int, default=200)
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()

    root = Path(__import__("tempfile").mkdtemp(prefix="flamingock-bench-"))
    package = workload.write_package(args.changes, root)
    race_package = workload.write_package(args.race_changes, root)
    poke_package = workload.write_package(50, root)
    rows: dict[str, dict[str, Any]] = {}
    failed = False
    for backend in backends.available():
        print(f"== {backend.name} ({backend.kind})", flush=True)
        try:
            rows[backend.name] = measure_backend(
                backend, args, root, package, race_package, poke_package
            )
        except Exception:
            traceback.print_exc()
            failed = True
        finally:
            try:
                backend.close()
            except Exception:
                traceback.print_exc()
                failed = True
    parse = compare.dag_parse()
    REPORT.write_text(report.render(rows, parse, args))
    print(REPORT.read_text())
    return 1 if failed or not rows else 0


def measure_backend(
    backend: backends.Backend,
    args: Any,
    root: Path,
    package: str,
    race_package: str,
    poke_package: str,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": backend.kind,
        "shared": backend.shared,
        "note": backend.note,
        "counting": backend.counting,
        "floor": backend.floor_text,
    }
    apply = measure.apply_vs_floor(backend, package, args.changes)
    row["apply"] = {k: v for k, v in apply.items() if k not in ("store", "pipeline")}
    row["rerun"] = measure.rerun(backend, apply["store"], apply["pipeline"])
    row["planning"] = measure.planning_growth(backend, apply["store"])
    row["poke"] = measure.sensor_poke(backend, poke_package)
    if backend.shared:
        row["race"] = _race(backend, args, root, race_package)
        row["handoff"] = measure.lock_handoff(backend)
    if backend.name in ALEMBIC_DATABASES:
        ours = compare.flamingock_fresh(backend, args.changes)
        theirs = compare.alembic_upgrade(backend.spec()["url"], args.changes)
        row["alembic"] = {
            "ours_s": ours["s"],
            "alembic_s": theirs["s"],
            "ratio": ours["s"] / theirs["s"],
        }
    print(row, flush=True)
    return row


def _race(backend: backends.Backend, args: Any, root: Path, race_package: str) -> dict[str, Any]:
    one = measure.race(backend, str(root), race_package, args.race_changes, 1)
    many = measure.race(backend, str(root), race_package, args.race_changes, args.processes)
    quick = measure.race(
        backend, str(root), race_package, args.race_changes, args.processes, retry=0.1
    )
    return {
        "one_s": one["wall_s"],
        "many_s": many["wall_s"],
        "ratio": many["wall_s"] / one["wall_s"],
        "quick_ratio": quick["wall_s"] / one["wall_s"],
        "exactly_once": one["exactly_once"] and many["exactly_once"] and quick["exactly_once"],
        "lock_left": one["lock_left"] or many["lock_left"] or quick["lock_left"],
    }


if __name__ == "__main__":
    sys.exit(main())
