"""Bad input: every mistake is refused with a clear error that names the culprit, and nothing is
written, neither in the audit store nor in the target.

The cases go through the surfaces users meet: `FlamingockOperator(...).execute(context={})` with
``AIRFLOW_CONN_*`` connections (the audit store ``flamingock_default`` and the target
``flamingock_demo_shop`` are SQLite files of the test), and the ``flamingock-airflow`` CLI.
"Nothing written" is checked by reading every table of both databases before and after: the
audit tables may not exist, or may exist empty, but no row appears and none changes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flamingock_provider.changes import Stage

AUDIT = "flamingockAuditLog"


@dataclass(frozen=True)
class Refusal:
    """How an attempt was refused: the error (or ``exit N``), what it is, and its text."""

    error: str
    kinds: frozenset[str]
    """The error's class and every base class by name (or just ``exit N``)."""
    message: str

    @classmethod
    def of(cls, err: BaseException, message: str | None = None) -> Refusal:
        kinds = frozenset(c.__name__ for c in type(err).__mro__)
        return cls(type(err).__name__, kinds, str(err) if message is None else message)


@dataclass
class Bench:
    """One test's Airflow world: connections, databases, change packages, and attempts."""

    packages: Any
    audit_db: Any
    shop_db: Any
    define_connection: Callable[..., None]
    capsys: pytest.CaptureFixture[str]
    before: Any = None
    """Both databases' rows right before the attempt (after the case's own set-up)."""

    def contents(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        return _snapshot(self.audit_db), _snapshot(self.shop_db)

    # -- change packages ----------------------------------------------------------------------

    def stage(self, name: str, *changes: str | dict[str, Any]) -> Stage:
        """A stage of generated changes (ids, or `change_source` keyword arguments)."""
        return self.packages.stage(name, list(changes))

    def raw_stage(self, name: str, modules: dict[str, str]) -> Stage:
        """A stage whose modules are written as given: ``{module name: source}``."""
        import importlib

        package = f"{self.packages.prefix}_{name}"
        folder = Path(self.packages.root) / package
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        for module, source in modules.items():
            (folder / f"{module}.py").write_text(source)
        importlib.invalidate_caches()
        return Stage(name, package)

    # -- attempts -----------------------------------------------------------------------------

    def operator(self, stages: list[Stage], **overrides: Any) -> Refusal:
        """Build and run the operator; it must refuse (at construction or in ``execute``)."""
        from airflow.sdk.exceptions import AirflowException

        from flamingock_provider.engine.errors import FlamingockError
        from flamingock_provider.operators.flamingock import FlamingockOperator
        from flamingock_provider.targets import SqlTargetSystem

        fields: dict[str, Any] = {
            "task_id": "apply_changes",
            "stages": stages,
            "target_systems": [SqlTargetSystem("shop-db", conn_id="flamingock_demo_shop")],
        }
        fields.update(overrides)
        self.before = self.contents()
        try:
            FlamingockOperator(**fields).execute(context={})
        except AirflowException as err:
            cause = err.__cause__
            if not isinstance(cause, FlamingockError):
                return Refusal.of(err)
            assert str(cause) in str(err)
            return Refusal.of(cause, str(err))
        except FlamingockError as err:  # refused by the constructor, as a DAG file would see
            return Refusal.of(err)
        except Exception as err:  # escaped unwrapped: the task fails with a bare driver error
            return Refusal.of(err)
        pytest.fail("the operator ran without refusing")

    def cli(self, *argv: str) -> Refusal:
        """Run ``flamingock-airflow``; it must exit non-zero."""
        from flamingock_provider.cli import main

        self.capsys.readouterr()
        self.before = self.contents()
        out = io.StringIO()
        try:
            code = main(list(argv), out)
        except SystemExit as exit_:  # argparse's own refusals
            code = exit_.code
        captured = self.capsys.readouterr()
        assert code != 0, out.getvalue()
        exit_code = f"exit {code}"
        text = out.getvalue() + captured.out + captured.err
        return Refusal(exit_code, frozenset({exit_code}), text)


def _snapshot(db: Any) -> dict[str, list[str]]:
    """Every row of every table of ``db`` (tables without rows left out)."""
    contents = {name: db.query(f'SELECT * FROM "{name}"') for name in db.tables()}
    return {name: sorted(map(repr, rows)) for name, rows in contents.items() if rows}


@dataclass(frozen=True)
class Case:
    """A row of the table: the error expected (a class name, matching subclasses too, or
    ``exit N``), the texts its message must contain, and the attempt.
    """

    error: str
    culprits: tuple[str, ...]
    attempt: Callable[[Bench], Refusal]
    bug: str | None = None
    """Why the case fails today (a bug in flamingock_provider): it is then a strict xfail."""


CASES: dict[str, Case] = {}


def case(
    error: str, *culprits: str, bug: str | None = None
) -> Callable[[Callable[[Bench], Refusal]], Any]:
    """Register a case: the error it must raise and the texts its message must contain."""

    def register(attempt: Callable[[Bench], Refusal]) -> Callable[[Bench], Refusal]:
        CASES[attempt.__name__.replace("_", "-")] = Case(error, culprits, attempt, bug)
        return attempt

    return register


# -- change units --------------------------------------------------------------------------


@case("ValidationError", "Duplicate change id 'same-id'", "stage 'first'", "stage 'second'")
def duplicate_ids_across_stages(b: Bench) -> Refusal:
    return b.operator([b.stage("first", "same-id"), b.stage("second", "same-id")])


@case("ValidationError", "order mismatch", "'0001'", "'0002'", "mismatched")
def order_mismatch(b: Bench) -> Refusal:
    return b.operator([b.stage("s", {"id": "mismatched", "order": "0002"})])


@case("ValidationError", "id must be a non-empty string", "got 42", "_0001__numeric")
def non_string_id(b: Bench) -> Refusal:
    source = _module("@change(id=42)", "def apply(self, connection):")
    return b.operator([b.raw_stage("s", {"_0001__numeric": source})])


@case("ValidationError", "'no-apply'", "has no 'apply' method")
def missing_apply(b: Bench) -> Refusal:
    source = _module('@change(id="no-apply")', "def rollback(self):")
    return b.operator([b.raw_stage("s", {"_0001__no_apply": source})])


@case("ValidationError", "'async-apply'", "'apply' is async")
def async_apply(b: Bench) -> Refusal:
    source = _module('@change(id="async-apply")', "async def apply(self, connection):")
    return b.operator([b.raw_stage("s", {"_0001__async_apply": source})])


@case("ValidationError", "'asks-for-cursor'", "unknown parameter 'cursor'")
def unknown_injected_parameter(b: Bench) -> Refusal:
    return b.operator([b.stage("s", {"id": "asks-for-cursor", "params": "connection, cursor"})])


@case("ValidationError", "'lost-change'", "unknown target system 'nowhere'", "shop-db")
def unknown_target_system(b: Bench) -> Refusal:
    return b.operator([b.stage("s", {"id": "lost-change", "target_system": "nowhere"})])


@case("ValidationError", "Stage 'ghost'", "cannot import 'no_such_package_xyz'")
def stage_package_not_importable(b: Bench) -> Refusal:
    return b.operator([Stage("ghost", "no_such_package_xyz")])


@case("ValidationError", "Stage 'hollow'", "holds no @change class")
def empty_stage(b: Bench) -> Refusal:
    return b.operator([b.raw_stage("hollow", {})])


@case("ValidationError", "_0001__nothing'", "named like a change but holds no @change class")
def change_module_without_a_change(b: Bench) -> Refusal:
    return b.operator([b.raw_stage("s", {"_0001__nothing": "VALUE = 1\n"})])


@case("ValidationError", "'first-twin'", "'second-twin'", "share order '0001'")
def two_changes_with_one_order(b: Bench) -> Refusal:
    modules = {
        name: _module(f'@change(id="{name}-twin", order="0001")', "def apply(self, connection):")
        for name in ("first", "second")
    }
    return b.operator([b.raw_stage("s", modules)])


@case("ValidationError", "Stage name 'twice' is used twice")
def duplicate_stage_name(b: Bench) -> Refusal:
    return b.operator([b.stage("twice", "one"), Stage("twice", b.stage("other", "two").package)])


# -- operator settings and connections -------------------------------------------------------


@case("ValidationError", "lock_lease must be positive")
def non_positive_lock_lease(b: Bench) -> Refusal:
    return b.operator([b.stage("s", "fine")], lock_lease=0)


@case("ValidationError", "Airflow connection 'not_defined_xyz' is not defined")
def audit_conn_id_missing(b: Bench) -> Refusal:
    return b.operator([b.stage("s", "fine")], audit_conn_id="not_defined_xyz")


@case("ValidationError", "'plain_postgres'", "conn type 'postgres'", "not a Flamingock audit store")
def conn_type_not_a_flamingock_type(b: Bench) -> Refusal:
    b.define_connection("plain_postgres", conn_type="postgres", host="127.0.0.1", schema="x")
    return b.operator([b.stage("s", "fine")], audit_conn_id="plain_postgres")


@case("ValidationError", "'broken_extras'", "extras are not valid JSON")
def malformed_extras_json(b: Bench) -> Refusal:
    b.define_connection("broken_extras", conn_type="flamingock_sql", extra='{"url": "sqlite:///x"')
    return b.operator([b.stage("s", "fine")], audit_conn_id="broken_extras")


@case("ValidationError", "'odd_flag'", "extra 'auto_create' must be true or false", "'maybe'")
def non_boolean_auto_create(b: Bench) -> Refusal:
    b.define_connection(
        "odd_flag",
        conn_type="flamingock_sql",
        extra={"url": b.audit_db.url, "auto_create": "maybe"},
    )
    return b.operator([b.stage("s", "fine")], audit_conn_id="odd_flag")


@case("ValidationError", "'not_a_url'", "extra 'url' is not a SQLAlchemy URL")
def extra_url_not_a_url(b: Bench) -> Refusal:
    b.define_connection("not_a_url", conn_type="flamingock_sql", extra={"url": "just words"})
    return b.operator([b.stage("s", "fine")], audit_conn_id="not_a_url")


# -- what is already in the store -------------------------------------------------------------


@case("AuditStoreError", f"table '{AUDIT}'", "lacks column(s)", "change_id")
def wrong_existing_table_schema(b: Bench) -> Refusal:
    b.audit_db.execute(f'CREATE TABLE "{AUDIT}" (id INTEGER PRIMARY KEY, note TEXT)')
    b.audit_db.execute(f"INSERT INTO \"{AUDIT}\" (note) VALUES ('somebody else''s row')")
    return b.operator([b.stage("s", "fine")])


@case("AuditStoreError", "change 'odd-state'", "execution exec-odd", "'EXPLODED'")
def audit_record_with_an_unknown_state(b: Bench) -> Refusal:
    entry = b.audit_db.record_crash("odd-state", "s", execution_id="exec-odd")
    for table in (AUDIT, f"{AUDIT}Latest"):
        b.audit_db.execute(
            f"UPDATE \"{table}\" SET state = 'EXPLODED' WHERE change_id = '{entry.change_id}'"
        )
    return b.operator([b.stage("s", "odd-state")])


# -- connections that cannot be used ---------------------------------------------------------


@case(
    "ValidationError",
    "'odd_port'",
    "extra 'url'",
)
def extra_url_with_a_non_numeric_port(b: Bench) -> Refusal:
    url = "postgresql+psycopg://postgres@127.0.0.1:notaport/x"
    b.define_connection("odd_port", conn_type="flamingock_sql", extra={"url": url})
    return b.operator([b.stage("s", "fine")], audit_conn_id="odd_port")


@case(
    "FlamingockError",
    "mysql+mysqldb",
)
def dialect_whose_driver_is_not_installed(b: Bench) -> Refusal:
    url = "mysql+mysqldb://root@127.0.0.1:3306/x"  # MySQLdb is not a dependency
    b.define_connection("no_driver", conn_type="flamingock_sql", extra={"url": url})
    return b.operator([b.stage("s", "fine")], audit_conn_id="no_driver")


@case("ValidationError", "Airflow connection 'no_such_target_conn' is not defined")
def target_conn_id_missing(b: Bench) -> Refusal:
    from flamingock_provider.targets import SqlTargetSystem

    target = SqlTargetSystem("shop-db", conn_id="no_such_target_conn")
    return b.operator([b.stage("s", "fine")], target_systems=[target])


@case(
    "FlamingockError",
    "'shop-db'",
)
def target_database_unreachable(b: Bench) -> Refusal:
    from flamingock_provider.targets import SqlTargetSystem

    target = SqlTargetSystem("shop-db", url="postgresql+psycopg://postgres@127.0.0.1:1/x")
    return b.operator([b.stage("s", "fine")], target_systems=[target])


# -- the CLI --------------------------------------------------------------------------------


@case("exit 2", "argument -r/--resolution", "invalid choice: 'MAYBE'")
def audit_fix_with_an_invalid_resolution(b: Bench) -> Refusal:
    b.audit_db.record_crash("crashed", "s")
    return b.cli("audit", "fix", "-c", "crashed", "-r", "MAYBE")


@case("exit 2", "Unknown change id 'typo-change'")
def audit_fix_of_an_unknown_change(b: Bench) -> Refusal:
    b.audit_db.record_crash("crashed", "s")
    return b.cli("audit", "fix", "-c", "typo-change", "-r", "APPLIED")


@case("exit 2", "--conn-json is not a valid connection")
def cli_conn_json_not_json(b: Bench) -> Refusal:
    return b.cli("--conn-json", "{not json", "audit", "list")


def _module(decorator: str, method: str) -> str:
    """A change module: ``decorator`` on a class with one ``method`` (its ``def`` line)."""
    return (
        "from flamingock_provider.changes import change\n\n\n"
        f"{decorator}\nclass Declared:\n    {method}\n        pass\n"
    )


@pytest.fixture
def bench(
    packages: Any,
    audit_db: Any,
    shop_db: Any,
    define_connection: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> Bench:
    """The audit store and the target as SQLite connections, and change packages."""
    return Bench(packages, audit_db, shop_db, define_connection, capsys)


def _params() -> list[Any]:
    return [
        pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else [])
        for name, c in CASES.items()
    ]


@pytest.mark.parametrize("name", _params())
def test_bad_input_is_refused_naming_the_culprit_and_nothing_is_written(
    bench: Bench, name: str
) -> None:
    """Each mistake raises its error (or exit code) with a message naming what is at fault,
    and no row is written or changed in the audit store or the target.
    """
    expected = CASES[name]

    refusal = expected.attempt(bench)

    missing = [c for c in expected.culprits if c not in refusal.message]
    assert (True, []) == (expected.error in refusal.kinds, missing), (
        f"{refusal.error}: {refusal.message}"
    )
    assert bench.before == bench.contents()
    assert set() == bench.shop_db.tables(), "the target was touched"


def test_the_table_has_at_least_fifteen_cases() -> None:
    """The table covers the fifteen kinds of mistake the reliability issue lists, and more."""
    assert len(CASES) >= 15, sorted(CASES)
