"""Store outage: the audit store goes away in the middle of a run.

PostgreSQL: the runner's connections are terminated with ``pg_terminate_backend`` (from a
separate admin connection, selecting them by the unique ``application_name`` the test gives the
store's engine) while a change is running. The run must fail with an `AuditStoreError` that
names the store, leave a history that is consistent, and the next run must pick up exactly
where it stopped.

DynamoDB Local: a private emulator (`dynamodb_local.start`) is stopped while a change is
running; the run must fail with an `AuditStoreError` naming the store and its tables. The
"bring it back and resume" half does not apply there: DynamoDB Local runs ``-inMemory``, so a
restarted emulator is empty; there is no history left to resume from.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dynamodb_local
import pytest
import servers
from reliability_kit import history_problems
from runner_kit import HANG_CHANGE_ENV, READY_FILE_ENV, RELEASE_FILE_ENV, ChangeSource, run_pipeline
from runner_scenarios import DynamoDBScenario, SqlScenario
from sqlalchemy import create_engine, text

from flamingock_provider.engine.errors import AuditStoreError
from flamingock_provider.engine.lock import DEFAULT_KEY
from flamingock_provider.engine.model import issues_in
from flamingock_provider.engine.result import Outcome

WAIT = 60.0
IDS = [f"change-{i:02d}" for i in range(1, 7)]


@pytest.fixture
def pause_inside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """``pause_inside(change_id)``: the change will pause inside ``apply`` (after recording
    itself); returns ``(ready, release)``: the file it writes when it pauses, and the file
    whose creation lets it go on. ``pause_inside(None)`` removes the pause.
    """

    def pause(change_id: str | None) -> tuple[Path, Path]:
        ready, release = tmp_path / "paused", tmp_path / "release"
        if change_id is None:
            monkeypatch.delenv(HANG_CHANGE_ENV)
        else:
            monkeypatch.setenv(HANG_CHANGE_ENV, change_id)
            monkeypatch.setenv(READY_FILE_ENV, str(ready))
            monkeypatch.setenv(RELEASE_FILE_ENV, str(release))
        return ready, release

    yield pause


def _wait_for_file(path: Path, future: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if future.done():
            pytest.fail(f"the run ended before pausing: {future.exception() or future.result()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the change did not pause within {WAIT}s")
        time.sleep(0.01)


def _terminate_backends(url: str, application_name: str) -> int:
    """Terminate every PostgreSQL backend of ``application_name``; how many there were."""
    admin = create_engine(url)
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": application_name},
            ).scalar_one()
        return int(killed)
    finally:
        admin.dispose()


@pytest.mark.servers
@pytest.mark.parametrize("where", ["audit", "other"], ids=["TX_SHARED", "TX_SEPARATE_WITH_MARKER"])
def test_postgresql_connections_killed_mid_run_fail_the_run_then_it_resumes(
    postgresql_world: SqlScenario, pause_inside: Any, where: str
) -> None:
    """``pg_terminate_backend`` on the store's connections while ``change-03`` runs: the run
    fails with an AuditStoreError naming the store; no APPLIED without STARTED and the latest
    view agrees with the history; the next run applies or recovers the rest, each change once.
    """
    world = postgresql_world
    application_name = f"flamingock-outage-{uuid.uuid4().hex[:8]}"
    stage = world.stage(*(ChangeSource(i) for i in IDS))
    target = world.target(world.audit_url if where == "audit" else world.other_url)
    store = world.store(engine_options={"connect_args": {"application_name": application_name}})
    ready, release = pause_inside("change-03")

    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_pipeline, store, [stage], [target], lease=30.0)
        _wait_for_file(ready, run)
        terminated = _terminate_backends(world.audit_url, application_name)
        release.touch()
        error = run.exception(timeout=WAIT)
    pause_inside(None)
    after = world.store()
    latest_after_outage = {c: e.state.value for c, e in after.read_latest().items()}
    problems_after_outage = history_problems(after.read_history(), dict(after.read_latest()))
    lock_after_outage = after.lock_holder(DEFAULT_KEY)
    resumed = world.run(stage, target)

    assert terminated >= 1
    assert isinstance(error, AuditStoreError), error
    assert (True, store.description) == (store.description in str(error), error.store)
    interrupted = {} if where == "audit" else {"change-03": "STARTED"}
    assert {"change-01": "APPLIED", "change-02": "APPLIED", **interrupted} == latest_after_outage
    assert ([], None) == (problems_after_outage, lock_after_outage)
    outcome_03 = Outcome.APPLIED if where == "audit" else Outcome.RECOVERED
    assert [Outcome.SKIPPED] * 2 + [outcome_03] + [Outcome.APPLIED] * 3 == [
        o.outcome for o in resumed.outcomes
    ]
    assert dict.fromkeys(IDS, 1) == world.counts(target)
    final = world.store()
    assert ([], []) == (
        issues_in(final.read_latest()),
        history_problems(final.read_history(), dict(final.read_latest())),
    )


@dataclass
class _PrivateDynamoDB:
    """A `store_backends.DynamoDBBackend` look-alike on an emulator this test owns."""

    local: Any
    prefix: str = field(default_factory=servers.unique_prefix)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    @property
    def audit_table(self) -> str:
        return self.name("audit")

    @property
    def lock_table(self) -> str:
        return self.name("lock")

    def __call__(self, **options: Any) -> Any:
        from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

        tables = {"audit_table": self.audit_table, "lock_table": self.lock_table}
        return DynamoDBAuditStore(**self.local.options(**tables, **options))


@pytest.fixture
def private_dynamodb_local() -> Iterator[Any]:
    """A DynamoDB Local of this test's own (stopped by the test, and at teardown)."""
    if os.environ.get(dynamodb_local.ENDPOINT_ENV):
        pytest.skip(f"{dynamodb_local.ENDPOINT_ENV} is set: that emulator is not ours to stop")
    try:
        local = dynamodb_local.start()
    except RuntimeError as err:
        if servers.servers_required():
            pytest.fail(f"DynamoDB Local did not start: {err}", pytrace=False)
        pytest.skip(f"DynamoDB Local did not start: {err}")
    try:
        yield local
    finally:
        local.stop()


@pytest.mark.servers
def test_dynamodb_local_stopped_mid_run_fails_the_run_naming_the_store(
    private_dynamodb_local: Any, pause_inside: Any, tmp_path: Path
) -> None:
    """Stopping the emulator while ``change-02`` runs: the run fails with an AuditStoreError
    naming the store and its audit table, instead of hanging or reporting success.
    """
    world = DynamoDBScenario(_PrivateDynamoDB(private_dynamodb_local), tmp_path)  # type: ignore[arg-type]
    stage = world.stage(*(ChangeSource(i, transactional=False) for i in IDS[:4]))
    target = world.target(shared=True)
    store = world.store(max_attempts=2)
    ready, release = pause_inside("change-02")
    try:
        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(run_pipeline, store, [stage], [target], lease=30.0)
            _wait_for_file(ready, run)
            private_dynamodb_local.stop()
            release.touch()
            error = run.exception(timeout=WAIT)
    finally:
        world.close()

    assert isinstance(error, AuditStoreError), error
    assert (True, True, store.description) == (
        store.description in str(error),
        world.backend.audit_table in str(error),
        error.store,
    )
