"""Print what `make demo` did: the operator's per-change lines, then the audit history."""

from __future__ import annotations

import re
import sys

from flamingock_provider.stores.sql import SqlAuditStore

LINE = re.compile(
    r"(change \S+: (?:APPLIED|SKIP|FAILED|RECOVERED)[^\[]*"
    r"|No open issues among \d+ change\(s\)\.|\d+ open issue\(s\); waiting\."
    r"|^schema ready: .*)"
)


def main(log_path: str, audit_db: str) -> int:
    with open(log_path, encoding="utf-8") as log:
        lines = [m.group(1).strip() for m in map(LINE.search, log) if m]
    print("This run:")
    for line in lines or ["(no change lines found; see the log)"]:
        print(f"  {line}")
    store = SqlAuditStore(f"sqlite:///{audit_db}")
    try:
        history = store.read_history()
    finally:
        store.close()
    print(f"Audit history in {audit_db} ({len(history)} entries):")
    for e in history:
        print(
            f"  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.stage_id:<7} {e.change_id:<26} "
            f"{e.state.value:<9} {e.tx_strategy.value}"
        )
    applied = sum(1 for line in lines if line.startswith("change") and ": APPLIED" in line)
    if applied:
        print(f"Applied {applied} change(s); run `make demo` again to see them skipped.")
    else:
        print("Nothing to apply: every change was already applied (no lock was taken).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
