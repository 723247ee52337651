"""Benchmark workloads: generated no-op change packages and a runner over any audit store."""

from __future__ import annotations

import importlib
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

from flamingock_provider.changes import Stage
from flamingock_provider.engine.discovery import Pipeline, load_pipeline
from flamingock_provider.engine.result import RunResult
from flamingock_provider.engine.runner import PipelineRunner
from flamingock_provider.engine.store import AuditStore
from flamingock_provider.targets.hook import HookTargetSystem

TARGET = HookTargetSystem("noop", hook=object())

_MODULE = """from flamingock_provider.changes import change


@change(id={id!r}, author="bench", transactional=False)
class Change:
    def apply(self, hook):
        pass
"""


def write_package(count: int, root: Path | None = None) -> str:
    """Write a package of ``count`` no-op changes; return its dotted name (importable)."""
    root = root or Path(tempfile.mkdtemp(prefix="flamingock-bench-"))
    name = f"bench_changes_{uuid.uuid4().hex[:8]}"
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for i in range(count):
        source = _MODULE.format(id=f"noop-{i:05d}")
        (package / f"_{i:05d}__noop.py").write_text(source)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return name


def pipeline_for(package: str) -> Pipeline:
    return load_pipeline([Stage("bench", package)], {TARGET.id: TARGET.injectable_names()})


def run(store: AuditStore, pipeline: Pipeline, **options: object) -> RunResult:
    """One runner run with the operator's defaults (heartbeat on, 60 s lease)."""
    options.setdefault("lock_wait", timedelta(seconds=120))
    return PipelineRunner(store, pipeline, [TARGET], **options).run()  # type: ignore[arg-type]
