"""Factories shared by the engine unit tests: change packages, clocks, stores, runners.

Change packages are written on the fly under ``tmp_path`` with a per-test prefix, so the
importlib caches of one test never see another test's modules. Every generated package
re-exports the test's *common* module, which records calls and raises on demand::

    CALLS      [(method, change_id), ...] in call order
    INJECTED   {(method, change_id): {parameter: value}} for the last call
    BEHAVIOUR  {(method, change_id): exception} raised by that call (after its effect)
    Crash      a BaseException: the process "dies" (the runner only catches Exception)
"""

from __future__ import annotations

import enum
import importlib
import re
import sys
import textwrap
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flamingock_provider.changes import Stage
from flamingock_provider.engine.discovery import Pipeline, load_pipeline
from flamingock_provider.engine.model import AuditEntry, AuditState, Recovery, TxStrategy
from flamingock_provider.engine.result import Outcome, RunResult
from flamingock_provider.engine.runner import PipelineRunner
from flamingock_provider.stores.memory import MemoryAuditStore
from flamingock_provider.testing import MemoryTargetSystem

START = datetime(2024, 1, 1, tzinfo=timezone.utc)

COMMON_SOURCE = '''\
"""State shared by the generated change packages of one test."""

CALLS = []
INJECTED = {}
BEHAVIOUR = {}


class Crash(BaseException):
    """The process dies: the runner catches Exception only, so nothing handles this."""


def hook(method, change_id, **injected):
    CALLS.append((method, change_id))
    INJECTED[(method, change_id)] = injected
    error = BEHAVIOUR.get((method, change_id))
    if error is not None:
        raise error
'''


# -- clock --------------------------------------------------------------------------------


class FakeClock:
    """A settable UTC clock; with ``tick``, every reading moves it on (distinct createdAt)."""

    def __init__(self, start: datetime = START, tick: timedelta = timedelta(0)) -> None:
        self.start = start
        self.now = start
        self.tick = tick
        self._mutex = threading.Lock()

    def __call__(self) -> datetime:
        with self._mutex:
            now = self.now
            self.now = now + self.tick
            return now

    def advance(self, seconds: float) -> None:
        with self._mutex:
            self.now += timedelta(seconds=seconds)

    def at(self, seconds: float) -> datetime:
        """The instant ``seconds`` after the clock's start."""
        return self.start + timedelta(seconds=seconds)


# -- audit entries ------------------------------------------------------------------------


def make_entry(
    change_id: str = "c1",
    state: AuditState = AuditState.APPLIED,
    **overrides: Any,
) -> AuditEntry:
    """An audit entry with plausible defaults; override any field by name."""
    fields: dict[str, Any] = {
        "execution_id": "exec-1",
        "change_id": change_id,
        "state": state,
        "created_at": START,
        "stage_id": "s1",
        "tx_strategy": TxStrategy.NON_TX,
        "recovery_strategy": Recovery.MANUAL_INTERVENTION,
    }
    fields.update(overrides)
    return AuditEntry(**fields)


# -- generated change packages ------------------------------------------------------------


def write_module(pkgdir: Path, module: str, source: str) -> Path:
    """Write ``pkgdir/<module>.py`` from (dedented) source."""
    path = pkgdir / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    return path


def _literal(value: object) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def change_source(
    *,
    id: str,
    params: Sequence[str] = ("data",),
    rollback: bool = False,
    cls_name: str = "Change",
    **decorator: object,
) -> str:
    """Source of one change module whose apply (and rollback) report to the common ``hook``.

    ``apply`` writes ``data[id] = "applied"`` (when it asks for ``data``) *before* reporting,
    so a failure configured in BEHAVIOUR leaves a partial effect, as a real change would.
    ``rollback`` removes it.
    """
    args = ", ".join(f"{k}={_literal(v)}" for k, v in {"id": id, **decorator}.items())
    signature = ", ".join(["self", *params])
    passed = ", ".join(f"{p}={p}" for p in params)
    lines = [
        "from flamingock_provider.changes import Recovery, change",
        "",
        "from . import hook",
        "",
        "",
        f"@change({args})",
        f"class {cls_name}:",
        f"    def apply({signature}):",
    ]
    if "data" in params:
        lines.append(f"        data[{id!r}] = 'applied'")
    lines.append(f"        hook('apply', {id!r}, {passed})")
    if rollback:
        lines.append(f"    def rollback({signature}):")
        if "data" in params:
            lines.append(f"        data.pop({id!r}, None)")
        lines.append(f"        hook('rollback', {id!r}, {passed})")
    return "\n".join(lines) + "\n"


def write_change(pkgdir: Path, module: str, **spec: Any) -> Path:
    """Write one change module; ``spec`` as for `change_source`."""
    return write_module(pkgdir, module, change_source(**spec))


def module_name_for(position: int, change_id: str) -> str:
    """``_NNNN__<id>`` for the change at ``position`` (1-based) of a stage."""
    return f"_{position:04d}__" + re.sub(r"\W", "_", change_id)


@dataclass
class Workspace:
    """A folder on ``sys.path`` where a test writes its own change packages."""

    root: Path
    prefix: str

    def __post_init__(self) -> None:
        (self.root / f"{self.prefix}_common.py").write_text(COMMON_SOURCE)

    def name(self, suffix: str) -> str:
        """The dotted name of this test's package ``suffix``."""
        return f"{self.prefix}_{suffix}"

    def write(self, pkgdir: Path, module: str, source: str) -> Path:
        """`write_module`, reachable from tests through the fixture."""
        return write_module(pkgdir, module, source)

    def write_change(self, pkgdir: Path, module: str, **spec: Any) -> Path:
        """`write_change`, reachable from tests through the fixture."""
        return write_change(pkgdir, module, **spec)

    def package(self, suffix: str, init: str | None = None) -> Path:
        """Create an (empty) package whose ``__init__`` re-exports the common module."""
        pkgdir = self.root / self.name(suffix)
        pkgdir.mkdir()
        default = f"from {self.prefix}_common import BEHAVIOUR, CALLS, INJECTED, Crash, hook\n"
        (pkgdir / "__init__.py").write_text(default if init is None else init)
        return pkgdir

    def stage(self, name: str, changes: Sequence[str | Mapping[str, Any]]) -> Stage:
        """A stage package with one module per change (an id, or `change_source` kwargs)."""
        pkgdir = self.package(name)
        for position, item in enumerate(changes, start=1):
            spec = {"id": item} if isinstance(item, str) else dict(item)
            write_change(pkgdir, module_name_for(position, spec["id"]), **spec)
        return Stage(name, self.name(name))

    @property
    def common(self) -> ModuleType:
        return importlib.import_module(f"{self.prefix}_common")

    def load(
        self, stages: Sequence[Stage], targets: Mapping[str, frozenset[str] | set[str]]
    ) -> Pipeline:
        importlib.invalidate_caches()
        return load_pipeline(stages, {k: frozenset(v) for k, v in targets.items()})


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A per-test folder on ``sys.path``; its modules are forgotten afterwards."""
    prefix = f"flk_{uuid.uuid4().hex[:10]}"
    sys.path.insert(0, str(tmp_path))
    try:
        yield Workspace(tmp_path, prefix)
    finally:
        sys.path.remove(str(tmp_path))
        sys.path_importer_cache.pop(str(tmp_path), None)
        for module in [m for m in sys.modules if m.startswith(prefix)]:
            del sys.modules[module]
        importlib.invalidate_caches()


# -- stores, targets, runners -------------------------------------------------------------


class RecordingStore(MemoryAuditStore):
    """A memory store that counts its calls (lock round trips, appends)."""

    def __init__(self) -> None:
        super().__init__("unit")
        self.calls: Counter[str] = Counter()

    def lock_acquire(self, key: str, owner: str, now: datetime, expires_at: datetime) -> bool:
        self.calls["lock_acquire"] += 1
        return super().lock_acquire(key, owner, now, expires_at)

    def lock_release(self, key: str, owner: str) -> None:
        self.calls["lock_release"] += 1
        super().lock_release(key, owner)

    def append(self, entry: AuditEntry, transaction: object | None = None) -> None:
        self.calls["append"] += 1
        super().append(entry, transaction)


TARGET_OPTIONS: Mapping[TxStrategy, Mapping[str, Any]] = {
    TxStrategy.NON_TX: {"transactions": False},
    TxStrategy.TX_SEPARATE_WITH_MARKER: {},
    TxStrategy.TX_SEPARATE_NO_MARKER: {"markers": False},
}


def make_target(store: MemoryAuditStore, strategy: TxStrategy) -> MemoryTargetSystem:
    """A memory target ``db`` whose (transactional) changes run under ``strategy``."""
    if strategy is TxStrategy.TX_SHARED:
        return MemoryTargetSystem("db", shared_with=store)
    return MemoryTargetSystem("db", **TARGET_OPTIONS[strategy])


@dataclass
class Scenario:
    """A pipeline of generated changes wired to a recording store and a memory target."""

    workspace: Workspace
    store: RecordingStore
    target: MemoryTargetSystem
    runner: PipelineRunner
    clock: FakeClock
    stages: dict[str, list[str]] = field(default_factory=dict)

    def run(self, dry_run: bool = False) -> RunResult:
        return self.runner.run(dry_run=dry_run)

    @property
    def common(self) -> ModuleType:
        return self.workspace.common

    def fail(self, method: str, change_id: str, error: BaseException) -> None:
        """Make the next calls of ``method`` on ``change_id`` raise ``error``."""
        self.common.BEHAVIOUR[(method, change_id)] = error

    def heal(self) -> None:
        """Remove every configured failure."""
        self.common.BEHAVIOUR.clear()

    def calls(self, method: str = "apply") -> list[str]:
        return [cid for m, cid in self.common.CALLS if m == method]

    def history(self, change_id: str) -> list[AuditState]:
        return [e.state for e in self.store.read_history() if e.change_id == change_id]

    def entries(self, change_id: str) -> list[AuditEntry]:
        return [e for e in self.store.read_history() if e.change_id == change_id]

    def latest(self, change_id: str) -> AuditEntry:
        return self.store.read_latest()[change_id]

    def record(self, change_id: str, state: AuditState, **overrides: Any) -> AuditEntry:
        """Append a hand-made entry (created now on the scenario's clock), e.g. an issue."""
        stage = next(s for s, ids in self.stages.items() if change_id in ids)
        fields: dict[str, Any] = {
            "execution_id": f"manual-{uuid.uuid4().hex[:8]}",
            "stage_id": stage,
            "created_at": self.clock(),
            "target_system_id": self.target.id,
        }
        fields.update(overrides)
        entry = make_entry(change_id, state, **fields)
        self.store.initialize()
        self.store.append(entry)
        return entry


ScenarioFactory = Callable[..., Scenario]


@pytest.fixture
def scenario(workspace: Workspace) -> ScenarioFactory:
    """Build a `Scenario`: ``scenario({"s1": ["c1", {"id": "c2", ...}]}, strategy=...)``."""

    def build(
        stages: Mapping[str, Sequence[str | Mapping[str, Any]]],
        strategy: TxStrategy = TxStrategy.TX_SEPARATE_WITH_MARKER,
        **runner_options: Any,
    ) -> Scenario:
        store = RecordingStore()
        target = make_target(store, strategy)
        declared = [workspace.stage(name, changes) for name, changes in stages.items()]
        pipeline = workspace.load(declared, {target.id: target.injectable_names()})
        clock = FakeClock(tick=timedelta(milliseconds=1))
        runner = PipelineRunner(
            store, pipeline, [target], clock=clock, heartbeat=False, **runner_options
        )
        ids = {s.name: [c.id for c in s.changes] for s in pipeline.stages}
        return Scenario(workspace, store, target, runner, clock, ids)

    return build


def outcomes(result: RunResult | None) -> dict[str, Outcome]:
    """``{change_id: outcome}`` of a run."""
    assert result is not None
    return {o.change_id: o.outcome for o in result.outcomes}


@pytest.fixture
def outcomes_of() -> Callable[[RunResult | None], dict[str, Outcome]]:
    """`outcomes` as a fixture, so test modules need not import this conftest."""
    return outcomes


@pytest.fixture
def entry_factory() -> Callable[..., AuditEntry]:
    """`make_entry` as a fixture."""
    return make_entry


@pytest.fixture
def recording_store() -> RecordingStore:
    """A fresh `RecordingStore`."""
    return RecordingStore()


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that only moves when told to."""
    return FakeClock()
