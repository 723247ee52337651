"""Declaring change units: ``@change`` and ``Stage`` accept good input and name bad input."""

from __future__ import annotations

import re

import pytest

from flamingock_provider.changes import CHANGE_ATTRIBUTE, ChangeSpec, Recovery, Stage, change
from flamingock_provider.engine.errors import ValidationError


def _change_class(name: str = "CreateOrders") -> type:
    """A fresh class with an ``apply`` method, not yet decorated."""
    return type(name, (), {"apply": lambda self: None})


def test_change_records_its_spec_with_documented_defaults() -> None:
    """@change stores a ChangeSpec on the class: author, transactional, recovery defaults."""
    cls = change(id="create-orders")(_change_class())

    expected = ChangeSpec(
        id="create-orders",
        author="not-specified",
        target_system=None,
        transactional=True,
        recovery=Recovery.MANUAL_INTERVENTION,
        order=None,
    )
    assert expected == getattr(cls, CHANGE_ATTRIBUTE)


def test_change_records_every_option_given() -> None:
    """Every keyword of @change ends up in the spec, and the class itself is returned."""
    original = _change_class()

    cls = change(
        id="x",
        author="data-team",
        target_system="orders-db",
        transactional=False,
        recovery=Recovery.ALWAYS_RETRY,
        order="0007",
    )(original)

    assert original is cls
    assert ChangeSpec("x", "data-team", "orders-db", False, Recovery.ALWAYS_RETRY, "0007") == (
        getattr(cls, CHANGE_ATTRIBUTE)
    )


@pytest.mark.parametrize("bad_id", [None, 7, "", "   ", b"bytes"], ids=repr)
def test_change_rejects_an_id_that_is_not_a_non_empty_string(bad_id) -> None:
    """A missing, empty or non-string id is a ValidationError naming the class."""
    cls = _change_class("BadIdChange")

    with pytest.raises(ValidationError, match=r"BadIdChange.*id must be a non-empty string"):
        change(id=bad_id)(cls)


@pytest.mark.parametrize("bad_order", [1, "", "  ", ["0001"]], ids=repr)
def test_change_rejects_a_bad_order(bad_order) -> None:
    """An order that is not a non-empty string is a ValidationError naming id and class."""
    cls = _change_class("BadOrderChange")

    with pytest.raises(ValidationError, match=r"'c1' on .*BadOrderChange.*order"):
        change(id="c1", order=bad_order)(cls)


@pytest.mark.parametrize("bad_recovery", ["ALWAYS_RETRY", None, 1, True], ids=repr)
def test_change_rejects_a_recovery_that_is_not_a_recovery(bad_recovery) -> None:
    """recovery must be a Recovery member; anything else names the class and the value."""
    cls = _change_class("BadRecoveryChange")

    with pytest.raises(ValidationError, match=r"BadRecoveryChange.*recovery must be a Recovery"):
        change(id="c1", recovery=bad_recovery)(cls)


def test_change_rejects_a_function() -> None:
    """@change decorates classes only."""

    def apply() -> None: ...

    with pytest.raises(ValidationError, match="must decorate a class"):
        change(id="c1")(apply)


def test_change_rejects_an_object_that_is_not_a_class() -> None:
    """Decorating an instance (here an int) is a ValidationError, not an AttributeError."""
    with pytest.raises(ValidationError, match="must decorate a class"):
        change(id="c1")(42)


def test_stage_keeps_name_and_package() -> None:
    """A valid Stage is a plain value."""
    stage = Stage("orders", "changes.orders")

    assert ("orders", "changes.orders") == (stage.name, stage.package)
    assert Stage("orders", "changes.orders") == stage


@pytest.mark.parametrize(
    ("name", "package", "culprit"),
    [
        ("", "changes.orders", "name"),
        ("   ", "changes.orders", "name"),
        (None, "changes.orders", "name"),
        ("orders", "", "package"),
        ("orders", " ", "package"),
        ("orders", 3, "package"),
    ],
)
def test_stage_rejects_empty_name_or_package(name, package, culprit) -> None:
    """Stage needs a non-empty name and package; the message names the attribute at fault."""
    with pytest.raises(ValidationError, match=re.escape(f"Stage {culprit} must be")):
        Stage(name, package)
