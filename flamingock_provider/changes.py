"""Declare change units: ``@change`` on a class with ``apply`` (and optionally ``rollback``).

This module is what change packages and DAG files import, so it imports nothing but the
standard library and the pure engine model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import Recovery

__all__ = ["CHANGE_ATTRIBUTE", "ChangeSpec", "Recovery", "Stage", "change"]

CHANGE_ATTRIBUTE = "__flamingock_change__"

T = TypeVar("T", bound=type)


@dataclass(frozen=True, slots=True)
class ChangeSpec:
    """What ``@change`` recorded about a class."""

    id: str
    author: str = "not-specified"
    target_system: str | None = None
    transactional: bool = True
    recovery: Recovery = Recovery.MANUAL_INTERVENTION
    order: str | None = None


def change(
    *,
    id: str,
    author: str = "not-specified",
    target_system: str | None = None,
    transactional: bool = True,
    recovery: Recovery = Recovery.MANUAL_INTERVENTION,
    order: str | None = None,
) -> Callable[[T], T]:
    """Mark a class as a change unit.

    :param id: unique across the whole pipeline; it is how the audit store knows the change.
    :param author: who wrote it, recorded in every audit entry.
    :param target_system: id of the target system the change works on; may be left out when
        the operator has exactly one target system.
    :param transactional: run ``apply`` inside the target's transaction when it has them.
    :param recovery: what to do when the outcome is uncertain (see `Recovery`).
    :param order: execution order within the stage; normally taken from the module name
        ``_<ORDER>__<name>.py``. When both are given they must match.
    """

    def mark(cls: T) -> T:
        if not isinstance(cls, type):
            raise ValidationError(f"@change must decorate a class, not {cls!r}")
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(id, str) or not id.strip():
            raise ValidationError(f"@change on {where}: id must be a non-empty string, got {id!r}")
        if order is not None and (not isinstance(order, str) or not order.strip()):
            raise ValidationError(f"@change '{id}' on {where}: order must be a non-empty string")
        if not isinstance(recovery, Recovery):
            raise ValidationError(
                f"@change '{id}' on {where}: recovery must be a Recovery, got {recovery!r}"
            )
        spec = ChangeSpec(id, author, target_system, bool(transactional), recovery, order)
        setattr(cls, CHANGE_ATTRIBUTE, spec)
        return cls

    return mark


@dataclass(frozen=True, slots=True)
class Stage:
    """A named group of change units: the ``_NNNN__*.py`` modules of one package.

    :param name: the stage id recorded in audit entries.
    :param package: dotted name of the package holding the change modules.
    """

    name: str
    package: str

    def __post_init__(self) -> None:
        for attr in ("name", "package"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(f"Stage {attr} must be a non-empty string, got {value!r}")
