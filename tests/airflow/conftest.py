"""Factories for the Airflow-layer tests.

Connections are injected the way Airflow users inject them in CI, as ``AIRFLOW_CONN_*``
variables in JSON form; databases are SQLite files under ``tmp_path``; change packages are
written on the fly under a per-test prefix, so one test's modules never leak into another's.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flamingock_provider.changes import Stage
from flamingock_provider.engine.model import AuditEntry, AuditState, Recovery, TxStrategy

AUDIT_CONN_ID = "flamingock_default"
SHOP_CONN_ID = "flamingock_demo_shop"


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file (absolute path: four slashes)."""
    return f"sqlite:///{path}"


@pytest.fixture
def define_connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Export ``AIRFLOW_CONN_<ID>`` in Airflow's JSON form; a ``str`` is exported as given."""

    def define(conn_id: str, value: str | None = None, **fields: Any) -> None:
        text = value if value is not None else json.dumps(fields)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", text)

    return define


@pytest.fixture
def sql_connection(define_connection: Callable[..., None]) -> Callable[..., None]:
    """Define a ``flamingock_sql`` connection whose extra ``url`` is the given URL."""

    def define(conn_id: str, url: str, **extras: Any) -> None:
        define_connection(conn_id, conn_type="flamingock_sql", extra={"url": url, **extras})

    return define


# -- databases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SqliteDb:
    """A SQLite file under ``tmp_path``, read back with plain SQL or as an audit store."""

    url: str

    def tables(self) -> set[str]:
        """The tables the database holds (none when the file does not exist yet)."""
        from sqlalchemy import create_engine, inspect

        engine = create_engine(self.url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql))]
        finally:
            engine.dispose()

    def execute(self, sql: str) -> None:
        """Run one statement and commit it."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url)
        try:
            with engine.begin() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def history(self) -> list[AuditEntry]:
        """Every audit entry, oldest first (the database is read as a SQL audit store)."""
        from flamingock_provider.stores.sql import SqlAuditStore

        store = SqlAuditStore(self.url)
        try:
            return store.read_history()
        finally:
            store.close()

    def states(self) -> dict[str, list[str]]:
        """``{change_id: [state, ...]}`` in the order the states were written."""
        states: dict[str, list[str]] = {}
        for entry in self.history():
            states.setdefault(entry.change_id, []).append(entry.state.value)
        return states

    def record_crash(self, change_id: str, stage: str, **overrides: Any) -> AuditEntry:
        """Append the history a crashed ``NON_TX`` change leaves behind: a lone ``STARTED``."""
        from flamingock_provider.engine.lock import utc_now
        from flamingock_provider.stores.sql import SqlAuditStore

        fields: dict[str, Any] = {
            "execution_id": f"crashed-{uuid.uuid4().hex[:8]}",
            "change_id": change_id,
            "state": AuditState.STARTED,
            "created_at": utc_now(),
            "stage_id": stage,
            "tx_strategy": TxStrategy.NON_TX,
            "recovery_strategy": Recovery.MANUAL_INTERVENTION,
        }
        fields.update(overrides)
        entry = AuditEntry(**fields)
        store = SqlAuditStore(self.url)
        try:
            store.initialize()
            store.append(entry)
        finally:
            store.close()
        return entry

    def hold_lock(self, key: str, owner: str, seconds: float = 600) -> None:
        """Take the pipeline lock ``key`` for another runner ``owner``, for ``seconds``."""
        from datetime import timedelta

        from flamingock_provider.engine.lock import utc_now
        from flamingock_provider.stores.sql import SqlAuditStore

        store = SqlAuditStore(self.url)
        try:
            store.initialize()
            now = utc_now()
            assert store.lock_acquire(key, owner, now, now + timedelta(seconds=seconds))
        finally:
            store.close()


@pytest.fixture
def audit_db(tmp_path: Path, sql_connection: Callable[..., None]) -> SqliteDb:
    """``flamingock_default`` -> a SQLite audit store under ``tmp_path``."""
    db = SqliteDb(sqlite_url(tmp_path / "audit.db"))
    sql_connection(AUDIT_CONN_ID, db.url)
    return db


@pytest.fixture
def shop_db(tmp_path: Path, sql_connection: Callable[..., None]) -> SqliteDb:
    """``flamingock_demo_shop`` -> a SQLite target database under ``tmp_path``."""
    db = SqliteDb(sqlite_url(tmp_path / "shop.db"))
    sql_connection(SHOP_CONN_ID, db.url)
    return db


# -- change packages ----------------------------------------------------------------------


def _literal(value: object) -> str:
    if isinstance(value, Recovery):
        return f"Recovery.{value.name}"
    return repr(value)


def change_source(
    id: str,
    body: str = "pass",
    params: str = "connection",
    **decorator: object,
) -> str:
    """The source of a module holding one change unit whose ``apply`` runs ``body``."""
    arguments = ", ".join(f"{k}={_literal(v)}" for k, v in {"id": id, **decorator}.items())
    return (
        "from sqlalchemy import text\n\n"
        "from flamingock_provider.changes import Recovery, change\n\n\n"
        f"@change({arguments})\n"
        "class Change:\n"
        f"    def apply(self, {params}):\n"
        f"        {body}\n"
    )


@dataclass
class Packages:
    """A folder on ``sys.path`` where a test writes its stages as packages."""

    root: Path
    prefix: str

    def stage(self, name: str, changes: Sequence[str | Mapping[str, Any]]) -> Stage:
        """Write package ``<prefix>_<name>``: one ``_NNNN__*.py`` module per change.

        Each change is an id, or the keyword arguments of `change_source`.
        """
        package = f"{self.prefix}_{name}"
        folder = self.root / package
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        for position, item in enumerate(changes, start=1):
            spec = {"id": item} if isinstance(item, str) else dict(item)
            module = f"_{position:04d}__{spec['id'].replace('-', '_')}.py"
            (folder / module).write_text(change_source(**spec))
        importlib.invalidate_caches()
        return Stage(name, package)


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[Packages]:
    """Write change packages for one test; they are forgotten afterwards."""
    root = tmp_path / "changes"
    root.mkdir()
    prefix = f"afl_{uuid.uuid4().hex[:10]}"
    sys.path.insert(0, str(root))
    try:
        yield Packages(root, prefix)
    finally:
        sys.path.remove(str(root))
        sys.path_importer_cache.pop(str(root), None)
        for module in [m for m in sys.modules if m.startswith(prefix)]:
            del sys.modules[module]
        importlib.invalidate_caches()


# -- issues: the CLI, DAGs built by a test, the fix DAG, triggers ------------------------


@dataclass(frozen=True)
class CliResult:
    """What one ``flamingock-airflow`` invocation returned and printed."""

    code: int | str | None
    out: str
    err: str

    def json(self) -> Any:
        """Standard output read as JSON (the ``--json`` forms)."""
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``flamingock_provider.cli.main`` in this process: ``cli("issue", "list")``.

    argparse rejects bad usage by raising ``SystemExit(2)``, as the console script would exit;
    that code is returned like any other.
    """
    import io

    from flamingock_provider.cli import main

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        out = io.StringIO()
        try:
            code: int | str | None = main(list(argv), out)
        except SystemExit as exit_:
            code = exit_.code
        captured = capsys.readouterr()
        return CliResult(code, out.getvalue() + captured.out, captured.err)

    return run


@pytest.fixture
def sqlite_db(tmp_path: Path, sql_connection: Callable[..., None]) -> Callable[[str], SqliteDb]:
    """``sqlite_db(conn_id)``: a further SQLite database under ``tmp_path``, as ``conn_id``."""

    def make(conn_id: str) -> SqliteDb:
        db = SqliteDb(sqlite_url(tmp_path / f"{conn_id}.db"))
        sql_connection(conn_id, db.url)
        return db

    return make


@pytest.fixture
def register_dag(airflow_db: Path, tmp_path: Path) -> Callable[[Any], Any]:
    """Serialise a DAG built in a test into the metadata database, so ``dag.test()`` can run it.

    ``dag.test()`` only runs DAGs the metadata database knows; a test's own DAG is not in the
    dags folder, so it is written there the way the DAG processor would write it.
    """

    def register(dag: Any) -> Any:
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

        DagBundlesManager().sync_bundles_to_db()
        bag = DagBag(dag_folder=str(tmp_path), collect_dags=False)
        bag.bag_dag(dag)
        sync_bag_to_db(bag, "dags-folder", None)
        return dag

    return register


@pytest.fixture
def fix_issue_dag(airflow_db: Path, dags_folder: Path) -> Any:
    """``dags/flamingock_fix_issue.py``, parsed by Airflow's own DagBag, fresh for each test.

    Fresh because ``dag.test(run_conf=...)`` runs tasks in this process and leaves the run's
    params on the task objects: a shared DAG would carry one test's conf into the next.
    """
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder / "flamingock_fix_issue.py"))
    assert {} == bag.import_errors
    return bag.get_dag("flamingock_fix_issue")


TRIGGERER_THREAD = "flamingock-test-triggerer"


@dataclass(frozen=True)
class TriggerRun:
    """What a trigger did while a test watched it on a real event loop."""

    before: list[Any]
    """Events yielded before the test's ``resolve`` step ran."""
    event: Any
    """The first event the trigger yielded."""
    longest_stall: float
    """Longest gap, in seconds, between ticks of a 10 ms ticker sharing the loop."""
    loop_thread: str = TRIGGERER_THREAD
    """Name of the thread that ran the event loop."""


@pytest.fixture
def watch_trigger() -> Callable[..., TriggerRun]:
    """Run a trigger's ``run()`` under ``asyncio.run`` beside a ticker that detects blocking.

    ``watch(trigger, resolve=fn, settle=0.3)``: the event loop runs in its own thread (named
    `TRIGGERER_THREAD`), as in a triggerer; after ``settle`` seconds the test notes what the
    trigger yielded so far, runs ``fn`` in the test's main thread (the fix, made elsewhere;
    ``dag.test()`` needs the main thread), then waits at most ``wait`` seconds for the first
    event. A trigger that never fires is cancelled and fails the test.
    """
    import asyncio
    import contextlib
    import threading
    import time

    def watch(
        trigger: Any,
        resolve: Callable[[], Any] | None = None,
        settle: float = 0.3,
        wait: float = 15.0,
    ) -> TriggerRun:
        events: list[Any] = []
        gaps: list[float] = []
        errors: list[BaseException] = []
        started = threading.Event()
        running: dict[str, Any] = {}

        async def consume() -> None:
            async with contextlib.aclosing(trigger.run()) as stream:
                async for event in stream:
                    events.append(event)
                    return

        async def tick() -> None:
            loop = asyncio.get_running_loop()
            last = loop.time()
            while True:
                await asyncio.sleep(0.01)
                now = loop.time()
                gaps.append(now - last)
                last = now

        async def main() -> None:
            running["loop"] = asyncio.get_running_loop()
            running["task"] = asyncio.current_task()
            started.set()
            ticker = asyncio.create_task(tick())
            try:
                await consume()
            finally:
                ticker.cancel()

        def loop_thread() -> None:
            try:
                asyncio.run(main())
            except BaseException as err:  # reported in the test's thread
                errors.append(err)
            finally:
                started.set()

        thread = threading.Thread(target=loop_thread, name=TRIGGERER_THREAD, daemon=True)
        thread.start()
        started.wait(10)
        time.sleep(settle)
        before = list(events)
        try:
            if resolve is not None:
                resolve()
        finally:
            thread.join(wait)
            if thread.is_alive():
                running["loop"].call_soon_threadsafe(running["task"].cancel)
                thread.join(5)
        if errors and not isinstance(errors[0], asyncio.CancelledError):
            raise errors[0]
        if not events:
            pytest.fail(f"the trigger yielded no event within {wait} s")
        return TriggerRun(before, events[0], max(gaps, default=0.0))

    return watch
