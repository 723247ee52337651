"""Load stages: import each package, collect its change units, order and validate them.

Everything that can be wrong with the declared pipeline is found here, before the audit store
is touched, and reported with the change, module, parameter or package at fault.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import pkgutil
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from flamingock_provider.changes import CHANGE_ATTRIBUTE, ChangeSpec, Stage
from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import Recovery

MODULE_PATTERN = re.compile(r"^_(?P<order>[0-9A-Za-z]{4,})__(?P<name>\w+)$")
"""``_<ORDER>__<name>``: ORDER is at least 4 characters, compared as a string."""

ALWAYS_INJECTED = frozenset({"context", "log"})
"""Names every change may ask for, whatever its target system."""


@dataclass(frozen=True, slots=True)
class ChangeDefinition:
    """A validated change unit, ready to run."""

    id: str
    stage: str
    order: str
    cls: type
    author: str
    target_system: str
    transactional: bool
    recovery: Recovery
    source_file: str
    apply_params: tuple[str, ...]
    rollback_params: tuple[str, ...] | None

    @property
    def has_rollback(self) -> bool:
        return self.rollback_params is not None

    @property
    def class_name(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


@dataclass(frozen=True, slots=True)
class LoadedStage:
    """A stage with its change units in execution order."""

    name: str
    changes: tuple[ChangeDefinition, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Validated stages, in order."""

    stages: tuple[LoadedStage, ...]

    def change_ids(self) -> list[str]:
        return [c.id for s in self.stages for c in s.changes]

    def stage_of(self) -> dict[str, str]:
        return {c.id: s.name for s in self.stages for c in s.changes}


def load_pipeline(stages: Sequence[Stage], target_names: Mapping[str, frozenset[str]]) -> Pipeline:
    """Import and validate every stage against the target systems' injectable names.

    :param stages: the declared stages, in execution order.
    :param target_names: target system id -> parameter names it injects.
    :raises ValidationError: on the first problem found, naming what is at fault.
    """
    if not stages:
        raise ValidationError("No stages given: pass at least one Stage(name, package)")
    seen_stage: set[str] = set()
    for stage in stages:
        if not isinstance(stage, Stage):
            raise ValidationError(f"Expected a Stage(name, package), got {stage!r}")
        if stage.name in seen_stage:
            raise ValidationError(f"Stage name '{stage.name}' is used twice")
        seen_stage.add(stage.name)
    loaded = tuple(load_stage(stage, target_names) for stage in stages)
    _check_unique_ids(loaded)
    return Pipeline(loaded)


def load_stage(stage: Stage, target_names: Mapping[str, frozenset[str]]) -> LoadedStage:
    """Import one stage's package and return its validated change units in order."""
    package = _import(stage.package, stage)
    if not hasattr(package, "__path__"):
        raise ValidationError(
            f"Stage '{stage.name}': '{stage.package}' is a module, not a package; "
            "put each change in its own _NNNN__name.py module inside a package"
        )
    changes: list[ChangeDefinition] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.ispkg or info.name.startswith("__"):
            continue
        module = _import(f"{stage.package}.{info.name}", stage)
        changes.extend(_changes_in(module, info.name, stage, target_names))
    if not changes:
        raise ValidationError(
            f"Stage '{stage.name}': package '{stage.package}' holds no @change class "
            "(expected modules named _NNNN__name.py)"
        )
    changes.sort(key=lambda c: c.order)
    for before, after in itertools.pairwise(changes):
        if before.order == after.order:
            raise ValidationError(
                f"Stage '{stage.name}': changes '{before.id}' and '{after.id}' share "
                f"order '{before.order}'; give each its own"
            )
    return LoadedStage(stage.name, tuple(changes))


def _import(dotted: str, stage: Stage) -> ModuleType:
    try:
        return importlib.import_module(dotted)
    except ValidationError:
        raise
    except Exception as err:
        raise ValidationError(
            f"Stage '{stage.name}': cannot import '{dotted}': {type(err).__name__}: {err}"
        ) from err


def _changes_in(
    module: ModuleType, module_name: str, stage: Stage, target_names: Mapping[str, frozenset[str]]
) -> Iterable[ChangeDefinition]:
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and isinstance(obj.__dict__.get(CHANGE_ATTRIBUTE), ChangeSpec)
    ]
    match = MODULE_PATTERN.match(module_name)
    if match and not classes:
        raise ValidationError(
            f"Stage '{stage.name}': module '{module.__name__}' is named like a change "
            "but holds no @change class"
        )
    if len(classes) > 1:
        ids = ", ".join(repr(getattr(c, CHANGE_ATTRIBUTE).id) for c in classes)
        raise ValidationError(
            f"Stage '{stage.name}': module '{module.__name__}' holds several changes ({ids}); "
            "put one change per module"
        )
    for cls in classes:
        spec: ChangeSpec = getattr(cls, CHANGE_ATTRIBUTE)
        yield _define(cls, spec, match.group("order") if match else None, stage, target_names)


def _define(
    cls: type,
    spec: ChangeSpec,
    module_order: str | None,
    stage: Stage,
    target_names: Mapping[str, frozenset[str]],
) -> ChangeDefinition:
    where = f"change '{spec.id}' ({cls.__module__}.{cls.__qualname__})"
    if module_order and spec.order and module_order != spec.order:
        raise ValidationError(
            f"{where}: order mismatch, module name says '{module_order}' but "
            f"order='{spec.order}'; make them agree or drop one"
        )
    order = spec.order or module_order
    if order is None:
        raise ValidationError(
            f"{where} has no order: name its module _NNNN__name.py or pass order='NNNN'"
        )
    target = _resolve_target(where, spec.target_system, target_names)
    allowed = target_names[target] | ALWAYS_INJECTED
    apply_params = _parameters(where, cls, "apply", allowed, target, required=True)
    assert apply_params is not None
    rollback_params = _parameters(where, cls, "rollback", allowed, target, required=False)
    return ChangeDefinition(
        id=spec.id,
        stage=stage.name,
        order=order,
        cls=cls,
        author=spec.author,
        target_system=target,
        transactional=spec.transactional,
        recovery=spec.recovery,
        source_file=inspect.getsourcefile(cls) or "",
        apply_params=apply_params,
        rollback_params=rollback_params,
    )


def _resolve_target(
    where: str, declared: str | None, target_names: Mapping[str, frozenset[str]]
) -> str:
    known = ", ".join(sorted(target_names)) or "none"
    if declared is None:
        if len(target_names) == 1:
            return next(iter(target_names))
        raise ValidationError(
            f"{where} names no target_system and the operator has {len(target_names)} "
            f"target systems ({known}); set target_system="
        )
    if declared not in target_names:
        raise ValidationError(f"{where}: unknown target system '{declared}' (known: {known})")
    return declared


def _parameters(
    where: str, cls: type, method: str, allowed: frozenset[str], target: str, *, required: bool
) -> tuple[str, ...] | None:
    func: Callable[..., Any] | None = getattr(cls, method, None)
    if func is None:
        if required:
            raise ValidationError(f"{where} has no '{method}' method")
        return None
    if not callable(func):
        raise ValidationError(f"{where}: '{method}' is not a method")
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        raise ValidationError(f"{where}: '{method}' is async; change units run synchronously")
    names: list[str] = []
    params = list(inspect.signature(func).parameters.values())
    if not isinstance(inspect.getattr_static(cls, method), (staticmethod, classmethod)):
        params = params[1:]  # a plain method: drop self (a classmethod's cls is already bound)
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name in allowed:
            names.append(param.name)
        elif param.default is param.empty:
            raise ValidationError(
                f"{where}: '{method}' asks for unknown parameter '{param.name}'; target "
                f"system '{target}' injects {', '.join(sorted(allowed))}"
            )
    return tuple(names)


def _check_unique_ids(stages: Sequence[LoadedStage]) -> None:
    seen: dict[str, ChangeDefinition] = {}
    for stage in stages:
        for change in stage.changes:
            first = seen.get(change.id)
            if first is not None:
                raise ValidationError(
                    f"Duplicate change id '{change.id}': {first.class_name} (stage "
                    f"'{first.stage}') and {change.class_name} (stage '{change.stage}')"
                )
            seen[change.id] = change
