"""One test's world for the runner suites (tests/contract, tests/reliability): a store, targets,
generated change packages, worker processes, and what the changes recorded.

`SqlScenario` works on a `store_backends.SqlBackend` (its audit database, and "another database"
for separate-transaction targets); `DynamoDBScenario` on DynamoDB Local. Both offer the same
calls the scenario tests use: `stage`, `separate_target`, `worker`, `counts`, `executions`,
`history`, so one test can run on every store that several processes can share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from runner_kit import (
    HANG_CHANGE_ENV,
    READY_FILE_ENV,
    TARGET_ID,
    ChangeSource,
    counter_table,
    run_pipeline,
    write_package,
)
from store_backends import DynamoDBBackend, SqlBackend

from flamingock_provider.changes import Stage
from flamingock_provider.engine.model import AuditEntry
from flamingock_provider.engine.result import RunResult

WORKER = Path(__file__).with_name("runner_worker.py")
KIT_DIR = str(Path(__file__).parent)
WORKER_TIMEOUT = 60
OTHER_ACCOUNT = "otheraccountkey"
"""DynamoDB: another access key id on the same emulator is another database (identity)."""


@dataclass(frozen=True, order=True)
class Execution:
    """One application of a change, as the change recorded it (times in epoch seconds)."""

    started_at: float
    ended_at: float
    change_id: str
    runner: str


def overlaps(executions: Sequence[Execution]) -> list[tuple[Execution, Execution]]:
    """Pairs of executions that were running at the same moment (none when runs are serial)."""
    found: list[tuple[Execution, Execution]] = []
    latest: Execution | None = None
    for execution in sorted(executions):
        if latest is not None and execution.started_at < latest.ended_at:
            found.append((latest, execution))
        if latest is None or execution.ended_at > latest.ended_at:
            latest = execution
    return found


def wait_for(files: Sequence[Path], *procs: subprocess.Popen[str]) -> None:
    """Wait until every file exists; fail if a process exits first or time runs out."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    while not all(f.exists() for f in files):
        for proc in procs:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"worker exited {proc.returncode} early:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"workers did not reach {files} in {WORKER_TIMEOUT}s")
        time.sleep(0.01)


class _Scenario:
    """What both scenario kinds share: packages, fail flags, worker processes."""

    kind: str
    counter: str

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.root = tmp_path / "packages"
        self.flags = tmp_path / "flags"
        self.flags.mkdir(exist_ok=True)
        self.packages: list[str] = []
        self._target_specs: dict[int, dict[str, Any]] = {}

    # -- provided by each kind ------------------------------------------------------------------

    def store(self) -> Any:
        raise NotImplementedError

    def store_spec(self) -> dict[str, Any]:
        """The audit store as `runner_worker.py` builds it."""
        raise NotImplementedError

    def shared_target(self, *, target_id: str = TARGET_ID) -> Any:
        """A target system in the audit store's own database, counter ready."""
        raise NotImplementedError

    def separate_target(self, *, markers: bool = True, target_id: str = TARGET_ID) -> Any:
        """A target system in another database than the audit store's, counter ready."""
        raise NotImplementedError

    def counts(self, where: Any = None) -> dict[str, int]:
        """How many times each change recorded an application of itself in ``where``."""
        raise NotImplementedError

    def executions(self, where: Any = None) -> list[Execution]:
        """Every application recorded in ``where``: who ran which change, from when to when."""
        raise NotImplementedError

    def _locations(self, targets: Iterable[Any]) -> list[Any]:
        """The distinct counter locations of ``targets``."""
        raise NotImplementedError

    def counts_in(self, targets: Iterable[Any]) -> dict[str, int]:
        """`counts` over several targets (each database read once)."""
        merged: dict[str, int] = {}
        for where in self._locations(targets):
            for change_id, count in self.counts(where).items():
                merged[change_id] = merged.get(change_id, 0) + count
        return merged

    def executions_in(self, targets: Iterable[Any]) -> list[Execution]:
        """`executions` over several targets (each database read once), in time order."""
        return sorted(e for where in self._locations(targets) for e in self.executions(where))

    def _audit_table(self) -> str | None:
        return None

    # -- shared ---------------------------------------------------------------------------------

    def stage(self, *changes: ChangeSource, probe_audit: bool = False, name: str = "main") -> Stage:
        """A stage of freshly generated changes, in the order given."""
        package = f"fl_{uuid.uuid4().hex[:8]}_changes"
        write_package(
            self.root,
            package,
            changes,
            counter=self.counter,
            audit_table=self._audit_table() if probe_audit else None,
            flags=self.flags,
            kind=self.kind,
        )
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        self.packages.append(package)
        return Stage(name, package)

    def fail(self, change_id: str, failing: bool = True) -> None:
        """Make ``change_id`` raise (after recording itself) until ``failing=False``."""
        flag = self.flags / change_id
        if failing:
            flag.touch()
        else:
            flag.unlink()

    def run(self, stage: Stage, target: Any, **options: Any) -> RunResult:
        """Run the pipeline in this process on a new store (closed afterwards)."""
        store = self.store()
        try:
            return run_pipeline(store, [stage], [target], **options)
        finally:
            store.close()

    def history(self, change_id: str | None = None) -> list[AuditEntry]:
        entries = self.store().read_history()
        return [e for e in entries if change_id is None or e.change_id == change_id]

    def worker(
        self,
        stage: Stage | Sequence[Stage],
        target: Any,
        *,
        lease: float = 10.0,
        env: dict[str, str] | None = None,
        **spec: Any,
    ) -> subprocess.Popen[str]:
        """Start `runner_worker.py` on this scenario's store, ``stage`` and ``target`` (or a
        list of stages and a list of targets).
        """
        stages = [stage] if isinstance(stage, Stage) else list(stage)
        targets = list(target) if isinstance(target, (list, tuple)) else [target]
        full = {
            "sys_path": str(self.root),
            "stages": [[s.name, s.package] for s in stages],
            "store": self.store_spec(),
            "targets": [self._target_specs[id(t)] for t in targets],
            "lease": lease,
            "wait": 30.0,
            "retry": 0.05,
            **spec,
        }
        return subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(full)],
            cwd=KIT_DIR,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_until_hang(
        self, stage: Stage, target: Any, where: str, *, lease: float = 1.0
    ) -> subprocess.Popen[str]:
        """Start a worker that hangs at ``where`` (a change id, or ``rollback:<id>``); SIGKILL it
        there; return it, dead. The lease is short so the dead runner's lock expires soon.
        """
        ready = self.tmp_path / f"ready-{uuid.uuid4().hex[:6]}"
        proc = self.worker(
            stage, target, lease=lease, env={HANG_CHANGE_ENV: where, READY_FILE_ENV: str(ready)}
        )
        wait_for([ready], proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=WORKER_TIMEOUT)
        assert -signal.SIGKILL == proc.returncode
        return proc

    def close(self) -> None:
        """Forget the generated packages (their modules and the folder on ``sys.path``)."""
        if str(self.root) in sys.path:
            sys.path.remove(str(self.root))
        for name in list(sys.modules):
            if name.split(".")[0] in self.packages:
                del sys.modules[name]


class SqlScenario(_Scenario):
    """The audit store's SQL database, another database (``other_url``), packages, counters.

    :param other_url: "another database" for separate-transaction targets; by default a SQLite
        file of the test (`SqlBackend.other_database_url`).
    """

    kind = "sql"

    def __init__(self, backend: SqlBackend, tmp_path: Path, other_url: str | None = None) -> None:
        super().__init__(tmp_path)
        self.backend = backend
        self.counter = backend.name("counter")
        self.marker_table = backend.name("marker")
        self.audit_url = backend.url
        self.other_url = other_url or backend.other_database_url()

    def store(self, **options: Any) -> Any:
        return self.backend(**options)

    def store_spec(self) -> dict[str, Any]:
        return {
            "kind": "sql",
            "url": self.audit_url,
            "audit_table": self.backend.audit_table,
            "lock_table": self.backend.lock_table,
        }

    def _audit_table(self) -> str | None:
        return self.backend.audit_table

    def target(self, url: str, *, markers: bool = True, target_id: str = TARGET_ID) -> Any:
        """The target system ``target_id`` on ``url``, its counter table created."""
        from flamingock_provider.targets.sql import SqlTargetSystem

        counter_table(self.counter).create(self.backend.engine(url), checkfirst=True)
        spec = {"url": url, "markers": markers, "marker_table": self.marker_table}
        target = SqlTargetSystem(target_id, **spec)
        self._target_specs[id(target)] = {"kind": "sql", "id": target_id, **spec}
        return target

    def shared_target(self, *, target_id: str = TARGET_ID) -> Any:
        return self.target(self.audit_url, target_id=target_id)

    def separate_target(self, *, markers: bool = True, target_id: str = TARGET_ID) -> Any:
        return self.target(self.other_url, markers=markers, target_id=target_id)

    def _locations(self, targets: Iterable[Any]) -> list[Any]:
        return list(dict.fromkeys(t.url for t in targets))

    def _url(self, where: Any) -> str:
        if where is None:
            return self.audit_url
        return where if isinstance(where, str) else where.url

    def counts(self, where: Any = None) -> dict[str, int]:
        from sqlalchemy import func, select

        table = counter_table(self.counter)
        with self.backend.engine(self._url(where)).connect() as conn:
            rows = conn.execute(select(table.c.change_id, func.count()).group_by(table.c.change_id))
            return {change_id: count for change_id, count in rows}

    def executions(self, where: Any = None) -> list[Execution]:
        from sqlalchemy import select

        t = counter_table(self.counter)
        query = select(t.c.started_at, t.c.ended_at, t.c.change_id, t.c.runner)
        with self.backend.engine(self._url(where)).connect() as conn:
            return sorted(Execution(*row) for row in conn.execute(query))

    def seen_started(self, url: str) -> list[int | None]:
        from sqlalchemy import select

        table = counter_table(self.counter)
        with self.backend.engine(url).connect() as conn:
            return list(conn.execute(select(table.c.seen_started)).scalars())

    def tables(self, url: str) -> set[str]:
        from sqlalchemy import inspect

        return set(inspect(self.backend.engine(url)).get_table_names())

    def markers(self, url: str) -> int:
        from sqlalchemy import MetaData, Table, func, select

        engine = self.backend.engine(url)
        table = Table(self.marker_table, MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


class DynamoDBScenario(_Scenario):
    """DynamoDB Local: the audit store's tables, a counter table, packages.

    "Another database" is the same emulator under another access key id (`OTHER_ACCOUNT`).
    """

    kind = "dynamodb"

    def __init__(self, backend: DynamoDBBackend, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.backend = backend
        self.local = backend.local
        self.counter = backend.name("counter")
        self.marker_table = backend.name("marker")
        self.local.client().create_table(
            TableName=self.counter,
            KeySchema=[{"AttributeName": "changeId", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "changeId", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

    def store(self, **options: Any) -> Any:
        return self.backend(**options)

    def store_spec(self) -> dict[str, Any]:
        return {
            "kind": "dynamodb",
            **self.local.options(
                audit_table=self.backend.audit_table, lock_table=self.backend.lock_table
            ),
        }

    def target(self, *, shared: bool, markers: bool = True, target_id: str = TARGET_ID) -> Any:
        """The target system ``target_id``: the audit store's database (``shared``) or another."""
        from flamingock_provider.targets.dynamodb import DynamoDBTargetSystem

        overrides = {} if shared else {"aws_access_key_id": OTHER_ACCOUNT}
        options = {**self.local.options(**overrides), "markers": markers}
        options["marker_table"] = self.marker_table
        target = DynamoDBTargetSystem(target_id, **options)
        self._target_specs[id(target)] = {"kind": "dynamodb", "id": target_id, **options}
        return target

    def shared_target(self, *, target_id: str = TARGET_ID) -> Any:
        return self.target(shared=True, target_id=target_id)

    def separate_target(self, *, markers: bool = True, target_id: str = TARGET_ID) -> Any:
        return self.target(shared=False, markers=markers, target_id=target_id)

    def _locations(self, targets: Iterable[Any]) -> list[Any]:
        return [None]  # one counter table, whatever the access key (-sharedDb)

    def _items(self) -> list[dict[str, Any]]:
        client = self.local.client()
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {"TableName": self.counter, "ConsistentRead": True}
        while True:
            page = client.scan(**request)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def counts(self, where: Any = None) -> dict[str, int]:
        return {i["changeId"]["S"]: int(i["applied"]["N"]) for i in self._items()}

    def executions(self, where: Any = None) -> list[Execution]:
        return sorted(
            Execution(
                int(i["startedAt"]["N"]) / 1e6,
                int(i["endedAt"]["N"]) / 1e6,
                i["changeId"]["S"],
                i["runner"]["S"],
            )
            for i in self._items()
        )
