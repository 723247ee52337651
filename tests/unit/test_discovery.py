"""Discovery: import stage packages, order their change units, and name every mistake."""

from __future__ import annotations

import re
import textwrap

import pytest

from flamingock_provider.changes import Stage
from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import Recovery

DATA = {"db": {"data"}}
"""One target system ``db`` that injects ``data``."""


def _change(args: str, body: str = "def apply(self, data): ...", cls: str = "Change") -> str:
    """Source of a module holding one decorated class (``args`` go to @change)."""
    members = textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")
    return (
        "from flamingock_provider.changes import Recovery, change\n\n\n"
        f"@change({args})\nclass {cls}:\n{members}"
    )


def _package(workspace, modules: dict[str, str], suffix: str = "s") -> Stage:
    """A stage package ``suffix`` holding ``modules`` (name -> source)."""
    pkgdir = workspace.package(suffix)
    for module, source in modules.items():
        workspace.write(pkgdir, module, source)
    return Stage(suffix, workspace.name(suffix))


def _ids(pipeline) -> list[list[str]]:
    return [[c.id for c in stage.changes] for stage in pipeline.stages]


# -- what loads ---------------------------------------------------------------------------


def test_a_stage_loads_into_validated_change_definitions(workspace) -> None:
    """A change module becomes a ChangeDefinition carrying everything the runner needs."""
    stage = _package(
        workspace,
        {
            "_0001__create": _change(
                "id='create', author='team', recovery=Recovery.ALWAYS_RETRY, transactional=False",
                """
                def apply(self, data, log): ...
                def rollback(self, data): ...
                """,
                cls="Create",
            )
        },
    )

    (definition,) = workspace.load([stage], DATA).stages[0].changes

    expected = {
        "id": "create",
        "stage": "s",
        "order": "0001",
        "author": "team",
        "target_system": "db",
        "transactional": False,
        "recovery": Recovery.ALWAYS_RETRY,
        "apply_params": ("data", "log"),
        "rollback_params": ("data",),
        "has_rollback": True,
        "class_name": f"{stage.package}._0001__create.Create",
    }
    assert expected == {k: getattr(definition, k) for k in expected}
    assert definition.source_file.endswith("_0001__create.py")


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        pytest.param(["_0010__c", "_0002__a", "_0009__b"], ["a", "b", "c"], id="zero-padded"),
        pytest.param(["_0002__b", "_00010__a"], ["a", "b"], id="string-not-number"),
        pytest.param(["_000B__c", "_000A__b", "_0009__a"], ["a", "b", "c"], id="letters"),
        pytest.param(["_1000__b", "_0999__a"], ["a", "b"], id="four-digits"),
        pytest.param(["_0001__z_last_name", "_0002__a_first_name"], ["z", "a"], id="by-order"),
    ],
)
def test_changes_run_in_module_order_compared_as_strings(workspace, modules, expected) -> None:
    """The ``_NNNN`` of each module name orders its stage, compared as strings."""
    stage = _package(
        workspace, {m: _change(f"id={m.split('__')[1].split('_')[0]!r}") for m in modules}
    )

    assert [expected] == _ids(workspace.load([stage], DATA))


def test_order_keyword_orders_a_module_whose_name_has_none(workspace) -> None:
    """``order=`` places a change from a module not named ``_NNNN__*`` among the others."""
    stage = _package(
        workspace,
        {
            "_0001__first": _change("id='first'"),
            "users": _change("id='users', order='0002'"),
            "_0003__third": _change("id='third'"),
        },
    )

    pipeline = workspace.load([stage], DATA)

    assert [["first", "users", "third"]] == _ids(pipeline)
    assert ["0001", "0002", "0003"] == [c.order for c in pipeline.stages[0].changes]


def test_order_keyword_agreeing_with_the_module_name_is_accepted(workspace) -> None:
    """Giving both the module order and the same ``order=`` is fine."""
    stage = _package(workspace, {"_0005__a": _change("id='a', order='0005'")})

    assert "0005" == workspace.load([stage], DATA).stages[0].changes[0].order


def test_modules_not_named_like_changes_and_subpackages_are_ignored(workspace) -> None:
    """Helper modules without @change and nested packages are not change units."""
    pkgdir = workspace.package("s")
    workspace.write(pkgdir, "_0001__a", _change("id='a'"))
    workspace.write(pkgdir, "helpers", "VALUE = 1\n")
    nested = pkgdir / "_0002__nested"
    nested.mkdir()
    (nested / "__init__.py").write_text(_change("id='nested'"))

    assert [["a"]] == _ids(workspace.load([Stage("s", workspace.name("s"))], DATA))


def test_a_change_class_imported_into_another_module_counts_once(workspace) -> None:
    """Only classes defined in a module count for it, not ones it imports."""
    stage = _package(
        workspace,
        {
            "_0001__a": _change("id='a'"),
            "_0002__b": "from ._0001__a import Change as A  # noqa\n" + _change("id='b'"),
        },
    )

    assert [["a", "b"]] == _ids(workspace.load([stage], DATA))


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        pytest.param("self", (), id="nothing"),
        pytest.param("self, data", ("data",), id="target-name"),
        pytest.param("self, data, retries=3", ("data",), id="default-not-injected"),
        pytest.param("self, context, log", ("context", "log"), id="always-injected"),
        pytest.param("self, *, log, data", ("log", "data"), id="keyword-only"),
        pytest.param("self, *args, **kwargs", (), id="var-args-ignored"),
    ],
)
def test_apply_parameters_are_injected_by_name(workspace, signature, expected) -> None:
    """Known names are injected, defaults and ``*args``/``**kwargs`` are left alone."""
    stage = _package(workspace, {"_0001__a": _change("id='a'", f"def apply({signature}): ...")})

    assert expected == workspace.load([stage], DATA).stages[0].changes[0].apply_params


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("@staticmethod\ndef apply(data): ...", id="staticmethod"),
        pytest.param("@classmethod\ndef apply(cls, data): ...", id="classmethod"),
    ],
)
def test_static_and_class_method_apply_parameters_are_injected(workspace, body) -> None:
    """An apply declared as staticmethod or classmethod still gets its parameters injected."""
    stage = _package(workspace, {"_0001__a": _change("id='a'", body)})

    assert ("data",) == workspace.load([stage], DATA).stages[0].changes[0].apply_params


def test_an_unknown_parameter_of_a_staticmethod_apply_is_refused(workspace) -> None:
    """Validation catches an unknown name before anything runs, however apply is declared."""
    stage = _package(
        workspace, {"_0001__a": _change("id='a'", "@staticmethod\ndef apply(cursor): ...")}
    )

    with pytest.raises(ValidationError, match="unknown parameter 'cursor'"):
        workspace.load([stage], DATA)


def test_context_and_log_are_allowed_whatever_the_target_injects(workspace) -> None:
    """``context`` and ``log`` are offered even by a target system that injects nothing."""
    stage = _package(
        workspace, {"_0001__a": _change("id='a'", "def apply(self, context, log): ...")}
    )

    (definition,) = workspace.load([stage], {"bare": set()}).stages[0].changes

    assert ("context", "log") == definition.apply_params
    assert definition.rollback_params is None
    assert not definition.has_rollback


def test_a_change_naming_no_target_uses_the_only_one(workspace) -> None:
    """With exactly one target system, ``target_system`` may be left out."""
    stage = _package(workspace, {"_0001__a": _change("id='a'")})

    assert "db" == workspace.load([stage], DATA).stages[0].changes[0].target_system


def test_a_change_naming_its_target_gets_that_one(workspace) -> None:
    """With several target systems the named one is used."""
    stage = _package(
        workspace, {"_0001__a": _change("id='a', target_system='cache'", "def apply(self): ...")}
    )
    targets = {"db": {"data"}, "cache": {"client"}}

    assert "cache" == workspace.load([stage], targets).stages[0].changes[0].target_system


def test_stages_keep_their_declared_order(workspace) -> None:
    """The pipeline lists stages in the order given, each with its own changes."""
    second = _package(workspace, {"_0001__b": _change("id='b'")}, suffix="second")
    first = _package(workspace, {"_0001__a": _change("id='a'")}, suffix="first")

    pipeline = workspace.load([second, first], DATA)

    assert ["second", "first"] == [s.name for s in pipeline.stages]
    assert ["b", "a"] == pipeline.change_ids()
    assert {"a": "first", "b": "second"} == pipeline.stage_of()


# -- what is refused, naming the culprit --------------------------------------------------

TWO_CHANGES = """\
from flamingock_provider.changes import change


@change(id="a")
class One:
    def apply(self, data): ...


@change(id="b")
class Two:
    def apply(self, data): ...
"""

ERROR_CASES = [
    pytest.param(
        {"_0001__a": _change("id='a', order='0002'")},
        DATA,
        ["change 'a'", "Change", "'0001'", "'0002'", "mismatch"],
        id="order-mismatch",
    ),
    pytest.param(
        {"make_users": _change("id='users'", cls="MakeUsers")},
        DATA,
        ["change 'users'", "MakeUsers", "has no order"],
        id="missing-order",
    ),
    pytest.param(
        {"_0001__a": _change("id='a'"), "late": _change("id='b', order='0001'")},
        DATA,
        ["'a'", "'b'", "share order '0001'"],
        id="duplicate-order",
    ),
    pytest.param(
        {
            "_0001__a": _change("id='same'", cls="First"),
            "_0002__b": _change("id='same'", cls="Second"),
        },
        DATA,
        ["'same'", "_0001__a.First", "_0002__b.Second"],
        id="duplicate-id-in-stage",
    ),
    pytest.param(
        {"_0001__a": _change("id='a'", "def rollback(self, data): ...", cls="NoApply")},
        DATA,
        ["change 'a'", "NoApply", "no 'apply' method"],
        id="missing-apply",
    ),
    pytest.param(
        {"_0001__a": _change("id='a'", "apply = 3")},
        DATA,
        ["change 'a'", "'apply' is not a method"],
        id="apply-not-callable",
    ),
    pytest.param(
        {"_0001__a": _change("id='a'", "async def apply(self, data): ...", cls="Async")},
        DATA,
        ["change 'a'", "Async", "'apply' is async"],
        id="async-apply",
    ),
    pytest.param(
        {
            "_0001__a": _change(
                "id='a'",
                """
                def apply(self, data): ...
                async def rollback(self, data): ...
                """,
            )
        },
        DATA,
        ["change 'a'", "'rollback' is async"],
        id="async-rollback",
    ),
    pytest.param(
        {"_0001__a": _change("id='a'", "def apply(self, data, cursor): ...", cls="Needy")},
        DATA,
        ["change 'a'", "Needy", "'apply'", "unknown parameter 'cursor'", "'db'", "data"],
        id="unknown-apply-parameter",
    ),
    pytest.param(
        {
            "_0001__a": _change(
                "id='a'",
                """
                def apply(self, data): ...
                def rollback(self, session): ...
                """,
            )
        },
        DATA,
        ["change 'a'", "'rollback'", "unknown parameter 'session'"],
        id="unknown-rollback-parameter",
    ),
    pytest.param(
        {"_0001__a": _change("id='a', target_system='nowhere'")},
        DATA,
        ["change 'a'", "unknown target system 'nowhere'", "known: db"],
        id="unknown-target",
    ),
    pytest.param(
        {"_0001__a": _change("id='a'")},
        {"db": {"data"}, "cache": {"client"}},
        ["change 'a'", "no target_system", "2 target systems", "cache, db"],
        id="no-target-among-two",
    ),
    pytest.param(
        {"_0001__a": _change("id='a'")},
        {},
        ["change 'a'", "no target_system", "0 target systems"],
        id="no-target-at-all",
    ),
    pytest.param(
        {"_0001__a": "VALUE = 1\n"},
        DATA,
        ["._0001__a'", "named like a change", "no @change class"],
        id="change-module-without-change",
    ),
    pytest.param(
        {"_0001__a": TWO_CHANGES},
        DATA,
        ["._0001__a'", "'a'", "'b'", "several changes"],
        id="two-changes-in-one-module",
    ),
    pytest.param(
        {"_0001__a": "raise RuntimeError('broken import')\n"},
        DATA,
        ["cannot import", "._0001__a'", "RuntimeError: broken import"],
        id="module-fails-to-import",
    ),
    pytest.param(
        {"_0001__a": _change("id='a'", "def apply(self, data) ...")},
        DATA,
        ["cannot import", "._0001__a'", "SyntaxError"],
        id="module-syntax-error",
    ),
    pytest.param(
        {},
        DATA,
        ["Stage 's'", "{package}'", "holds no @change class"],
        id="empty-stage",
    ),
    pytest.param(
        {"helpers": "VALUE = 1\n"},
        DATA,
        ["Stage 's'", "{package}'", "holds no @change class"],
        id="only-helper-modules",
    ),
]


@pytest.mark.parametrize(("modules", "targets", "fragments"), ERROR_CASES)
def test_a_bad_stage_is_refused_naming_the_culprit(workspace, modules, targets, fragments):
    """Each mistake in a stage is a ValidationError whose message names what is at fault."""
    stage = _package(workspace, modules)

    with pytest.raises(ValidationError) as excinfo:
        workspace.load([stage], targets)

    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment.format(package=stage.package) in message


def test_duplicate_ids_across_stages_name_both_classes(workspace) -> None:
    """A change id used in two stages is refused, naming both classes and both stages."""
    one = _package(workspace, {"_0001__a": _change("id='dup'", cls="First")}, suffix="one")
    two = _package(workspace, {"_0001__b": _change("id='dup'", cls="Second")}, suffix="two")

    with pytest.raises(ValidationError, match="Duplicate change id 'dup'") as excinfo:
        workspace.load([one, two], DATA)

    message = str(excinfo.value)
    for fragment in (f"{one.package}._0001__a.First", f"{two.package}._0001__b.Second"):
        assert fragment in message
    for fragment in ("stage 'one'", "stage 'two'"):
        assert fragment in message


def test_an_unimportable_package_is_named(workspace) -> None:
    """A stage whose package does not exist names the stage and the package."""
    missing = workspace.name("missing")

    with pytest.raises(ValidationError, match=rf"Stage 'gone'.*cannot import '{missing}'"):
        workspace.load([Stage("gone", missing)], DATA)


def test_a_module_is_not_a_stage_package(workspace) -> None:
    """A stage must point at a package, not at a single module."""
    workspace.write(workspace.root, workspace.name("flat"), _change("id='a', order='0001'"))

    with pytest.raises(ValidationError, match=re.escape(f"'{workspace.name('flat')}' is a module")):
        workspace.load([Stage("flat", workspace.name("flat"))], DATA)


def test_stage_names_are_unique(workspace) -> None:
    """Two stages with the same name are refused, naming it."""
    one = _package(workspace, {"_0001__a": _change("id='a'")}, suffix="one")
    two = _package(workspace, {"_0001__b": _change("id='b'")}, suffix="two")

    with pytest.raises(ValidationError, match="Stage name 'same' is used twice"):
        workspace.load([Stage("same", one.package), Stage("same", two.package)], DATA)


@pytest.mark.parametrize(
    ("stages", "fragment"),
    [
        pytest.param([], "No stages given", id="none"),
        pytest.param(["a.package"], "Expected a Stage(name, package), got 'a.package'", id="str"),
    ],
)
def test_the_stage_list_itself_is_checked(workspace, stages, fragment) -> None:
    """An empty stage list, or an item that is not a Stage, is refused."""
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        workspace.load(stages, DATA)
