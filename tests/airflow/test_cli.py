"""The ``flamingock-airflow`` CLI: listing, inspecting and fixing issues; exit codes; output.

Most tests call ``main()`` in this process through the ``cli`` fixture, on the SQLite audit store
of ``flamingock_default`` (an ``AIRFLOW_CONN_*`` variable); a few run the installed console
script as a subprocess. Exit codes: 0 ok, 1 ``issue list`` found issues, 2 bad usage or input
(nothing written), 3 the store could not be used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from flamingock_provider.engine.model import CAMEL_FIELDS, AuditState, TxStrategy

SECRET = "S3cretPW"
UNREACHABLE_PG = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/no_such_db_xyz"
CONSOLE_SCRIPT = Path(sys.executable).parent / "flamingock-airflow"
ISSUE_KEYS = {
    "changeId",
    "stageId",
    "state",
    "createdAt",
    "executionId",
    "txStrategy",
    "recoveryStrategy",
    "targetSystemId",
    "error",
}
TRACE = "Traceback (most recent call last):\n  File 'c.py', line 1\nOSError: disk full\n"


def conn_uri(url: str) -> str:
    """A ``flamingock_sql`` connection URI whose extra ``url`` is ``url``."""
    return "flamingock-sql://?" + urlencode({"url": url})


@pytest.fixture
def shop_history(audit_db: Any) -> Any:
    """An audit store with two healthy changes and three issues, one of each uncertain state."""
    applied = AuditState.APPLIED
    audit_db.record_crash(
        "create-orders", "schema", state=applied, tx_strategy=TxStrategy.TX_SHARED
    )
    audit_db.record_crash("index-orders", "schema", state=applied)
    audit_db.record_crash("load-totals", "data", target_system_id="shop-db")
    audit_db.record_crash(
        "copy-files", "data", state=AuditState.FAILED, error_trace=TRACE, target_system_id="files"
    )
    audit_db.record_crash(
        "purge-cache", "data", state=AuditState.ROLLBACK_FAILED, error_trace="boom\nValueError: x"
    )
    return audit_db


# -- issue list ---------------------------------------------------------------------------


def test_issue_list_without_issues_exits_0(cli: Callable[..., Any], audit_db: Any) -> None:
    """No open issue (here: a store never used): exit 0 and say so; no table is created."""
    result = cli("issue", "list")

    assert (0, "No open issues.\n", set()) == (result.code, result.out, audit_db.tables())


def test_issue_list_with_issues_exits_1_and_shows_a_table(
    cli: Callable[..., Any], shop_history: Any
) -> None:
    """Open issues: exit 1; one row per issue with change, stage, state and error; a hint."""
    result = cli("issue", "list")

    assert 1 == result.code
    header, _, *rows, summary = result.out.splitlines()
    assert ["CHANGE", "STAGE", "STATE", "SINCE", "(UTC)", "ERROR"] == header.split()
    assert ["copy-files", "load-totals", "purge-cache"] == [row.split()[0] for row in rows]
    assert ["data", "STARTED", "-"] == [rows[1].split()[i] for i in (1, 2, -1)]
    assert "OSError: disk full" in rows[0]
    assert "ROLLBACK_FAILED" in rows[2]
    assert summary.startswith("3 open issue(s).")
    assert "audit fix" in summary


def test_issue_list_json_has_stable_keys(cli: Callable[..., Any], shop_history: Any) -> None:
    """``--json``: a list of issues with Flamingock's camelCase keys, and still exit 1."""
    result = cli("issue", "list", "--json")

    issues = result.json()
    assert (1, [ISSUE_KEYS] * 3) == (result.code, [set(issue) for issue in issues])
    copy_files = issues[0]
    expected = {
        "changeId": "copy-files",
        "stageId": "data",
        "state": "FAILED",
        "txStrategy": "NON_TX",
        "recoveryStrategy": "MANUAL_INTERVENTION",
        "targetSystemId": "files",
        "error": "OSError: disk full",
    }
    assert expected == {key: copy_files[key] for key in expected}
    assert copy_files["executionId"].startswith("crashed-")
    assert copy_files["createdAt"].endswith("+00:00")


# -- issue get ----------------------------------------------------------------------------


def test_issue_get_without_a_change_id_shows_the_oldest_issue(
    cli: Callable[..., Any], shop_history: Any
) -> None:
    """Without ``-c``: the oldest open issue, described in one line."""
    result = cli("issue", "get")

    assert 0 == result.code
    assert result.out.startswith("change 'load-totals' (stage 'data') is STARTED since")


def test_issue_get_without_issues_says_so(cli: Callable[..., Any], audit_db: Any) -> None:
    """With nothing open: exit 0, a sentence, or JSON ``null``."""
    audit_db.record_crash("c1", "s1", state=AuditState.APPLIED)

    actual = [(r.code, r.out) for r in (cli("issue", "get"), cli("issue", "get", "--json"))]

    assert [(0, "No open issues.\n"), (0, "null\n")] == actual


@pytest.mark.parametrize(
    ("change_id", "explains"),
    [
        pytest.param("load-totals", "the process died", id="STARTED"),
        pytest.param("copy-files", "whatever it did before the error is still", id="FAILED-NON_TX"),
        pytest.param("purge-cache", "then its rollback failed too", id="ROLLBACK_FAILED"),
    ],
)
def test_issue_get_guidance_explains_each_state(
    cli: Callable[..., Any], shop_history: Any, change_id: str, explains: str
) -> None:
    """``--guidance`` says what probably happened for the state, and how to resolve it."""
    text = cli("issue", "get", "-c", change_id, "--guidance")
    record = cli("issue", "get", "-c", change_id, "--guidance", "--json")

    assert (0, 0) == (text.code, record.code)
    assert explains in text.out
    assert f"audit fix -c {change_id} -r APPLIED" in text.out
    assert f"audit fix -c {change_id} -r ROLLED_BACK" in text.out
    assert ISSUE_KEYS | {"guidance"} == set(record.json())
    assert explains in record.json()["guidance"]


def test_issue_get_json_without_guidance_has_the_issue_keys_only(
    cli: Callable[..., Any], shop_history: Any
) -> None:
    """``issue get --json`` without ``--guidance`` is the same record as in ``issue list``."""
    listed = {i["changeId"]: i for i in cli("issue", "list", "--json").json()}

    got = cli("issue", "get", "-c", "purge-cache", "--json").json()

    assert listed["purge-cache"] == got


# -- audit list ---------------------------------------------------------------------------


def test_audit_list_shows_the_latest_entry_per_change(
    cli: Callable[..., Any], shop_history: Any
) -> None:
    """The human table has a header and one row per change, naming change, state and author."""
    result = cli("audit", "list")

    assert 0 == result.code
    header, _, *rows = result.out.splitlines()
    assert ["CREATED", "(UTC)", "STAGE", "CHANGE", "STATE", "TX", "STRATEGY", "AUTHOR"] == (
        header.split()
    )
    expected = ["create-orders", "index-orders", "load-totals", "copy-files", "purge-cache"]
    assert expected == [row.split()[3] for row in rows]
    assert "TX_SHARED" in rows[0]


def test_audit_list_json_uses_flamingocks_field_names(
    cli: Callable[..., Any], shop_history: Any
) -> None:
    """``--json`` entries carry exactly Flamingock's camelCase fields, with JSON values."""
    entries = cli("audit", "list", "--json").json()

    assert [set(CAMEL_FIELDS.values())] * 5 == [set(entry) for entry in entries]
    first = entries[0]
    assert ("create-orders", "APPLIED", "TX_SHARED") == (
        first["changeId"],
        first["state"],
        first["txStrategy"],
    )


def test_audit_list_history_and_since(cli: Callable[..., Any], audit_db: Any) -> None:
    """``--history`` lists every entry; ``--since`` keeps those at or after an ISO time."""
    old = audit_db.record_crash("c1", "s1")
    cli("audit", "fix", "-c", "c1", "-r", "APPLIED")
    later = audit_db.record_crash("c2", "s1", state=AuditState.APPLIED)
    since = later.created_at.isoformat()

    def states(*argv: str) -> list[tuple[str, str]]:
        return [(e["changeId"], e["state"]) for e in cli("audit", "list", "--json", *argv).json()]

    assert [("c1", "STARTED"), ("c1", "MANUAL_MARKED_AS_APPLIED"), ("c2", "APPLIED")] == states(
        "--history"
    )
    assert [("c1", "MANUAL_MARKED_AS_APPLIED"), ("c2", "APPLIED")] == states()
    assert [("c2", "APPLIED")] == states("--since", since)
    assert [("c2", "APPLIED")] == states("--history", "--since", since)
    assert 3 == len(states("--history", "--since", old.created_at.isoformat()))


# -- audit fix ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "state"),
    [("APPLIED", "MANUAL_MARKED_AS_APPLIED"), ("ROLLED_BACK", "MANUAL_MARKED_AS_ROLLED_BACK")],
)
def test_audit_fix_resolves_the_issue(
    cli: Callable[..., Any], shop_history: Any, resolution: str, state: str
) -> None:
    """``audit fix`` appends the manual entry (author: the CLI), says so, and closes the issue."""
    result = cli("audit", "fix", "-c", "load-totals", "-r", resolution)

    assert 0 == result.code
    assert f"Change 'load-totals' marked {state} by flamingock-cli" in result.out
    entry = shop_history.history()[-1]
    assert ("load-totals", state, "flamingock-cli") == (
        entry.change_id,
        entry.state.value,
        entry.author,
    )
    remaining = [i["changeId"] for i in cli("issue", "list", "--json").json()]
    assert ["copy-files", "purge-cache"] == remaining


def test_audit_fix_records_the_given_author_and_prints_json(
    cli: Callable[..., Any], shop_history: Any
) -> None:
    """``--author`` names who resolved it; ``--json`` prints the entry written."""
    result = cli("audit", "fix", "-c", "copy-files", "-r", "APPLIED", "--author", "ada", "--json")

    written = result.json()
    assert (0, set(CAMEL_FIELDS.values())) == (result.code, set(written))
    assert ("copy-files", "MANUAL_MARKED_AS_APPLIED", "ada") == (
        written["changeId"],
        written["state"],
        written["author"],
    )
    assert shop_history.history()[-1].as_json() == written


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["audit", "fix", "-c", "no-such-change", "-r", "APPLIED"],
            "Unknown change id 'no-such-change'",
            id="fix-unknown-change",
        ),
        pytest.param(
            ["audit", "fix", "-c", "index-orders", "-r", "APPLIED"],
            "'index-orders' has no issue (its latest state is APPLIED)",
            id="fix-change-without-issue",
        ),
        pytest.param(
            ["audit", "fix", "-c", "load-totals", "-r", "DONE"],
            "invalid choice: 'DONE'",
            id="fix-invalid-resolution",
        ),
        pytest.param(
            ["audit", "fix", "-c", "load-totals"],
            "the following arguments are required: -r/--resolution",
            id="fix-without-resolution",
        ),
        pytest.param(
            ["audit", "fix", "-c", "load-totals", "-r", "APPLIED", "--author", " "],
            "author must be a non-empty name",
            id="fix-blank-author",
        ),
        pytest.param(
            ["issue", "get", "-c", "no-such-change"],
            "Unknown change id 'no-such-change'",
            id="get-unknown-change",
        ),
        pytest.param(
            ["issue", "get", "-c", "create-orders"],
            "'create-orders' has no issue",
            id="get-change-without-issue",
        ),
        pytest.param(
            ["audit", "list", "--since", "last tuesday"],
            "not an ISO 8601 time",
            id="since-not-iso",
        ),
        pytest.param(["audit"], "required: command", id="no-command"),
        pytest.param(["frobnicate"], "invalid choice: 'frobnicate'", id="unknown-group"),
        pytest.param(
            ["--conn-id", "no_such_conn", "issue", "list"],
            "Airflow connection 'no_such_conn' is not defined",
            id="undefined-connection",
        ),
        pytest.param(
            ["--conn-id", "http_conn", "issue", "list"],
            "'http_conn' has conn type 'http', which is not a Flamingock audit store",
            id="connection-of-another-kind",
        ),
        pytest.param(
            ["--conn-id", "audit", "--conn-uri", "x://", "issue", "list"],
            "not allowed with argument",
            id="two-connection-sources",
        ),
        pytest.param(
            ["--conn-json", "{not json", "issue", "list"],
            "--conn-json is not a valid connection",
            id="conn-json-not-json",
        ),
        pytest.param(
            ["--conn-json", "[1, 2]", "issue", "list"],
            "--conn-json is not a valid connection",
            id="conn-json-a-list",
        ),
        pytest.param(
            ["--conn-json", '"flamingock_sql"', "issue", "list"],
            "--conn-json is not a valid connection",
            id="conn-json-a-string",
        ),
        pytest.param(
            ["--conn-json", "null", "issue", "list"],
            "--conn-json is not a valid connection",
            id="conn-json-null",
        ),
        pytest.param(
            ["--conn-uri", "flamingock-sql://u:p@host:notaport/db", "issue", "list"],
            "--conn-uri is not a valid connection",
            id="conn-uri-bad-port",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(
    cli: Callable[..., Any],
    shop_history: Any,
    define_connection: Callable[..., None],
    argv: list[str],
    message: str,
) -> None:
    """Bad usage or bad input: exit 2, a message on stderr saying what is wrong, nothing written."""
    define_connection("http_conn", conn_type="http", host="example.com")
    before = shop_history.history()

    result = cli(*argv)

    assert (2, "") == (result.code, result.out)
    assert message in result.err
    assert before == shop_history.history()


def test_second_fix_of_the_same_change_exits_2(cli: Callable[..., Any], audit_db: Any) -> None:
    """Once fixed, the change has no issue: fixing it again is refused and writes nothing."""
    audit_db.record_crash("c1", "s1")
    first = cli("audit", "fix", "-c", "c1", "-r", "APPLIED")
    entries = audit_db.history()

    second = cli("audit", "fix", "-c", "c1", "-r", "ROLLED_BACK")

    assert (0, 2) == (first.code, second.code)
    assert "latest state is MANUAL_MARKED_AS_APPLIED" in second.err
    assert entries == audit_db.history()


def test_issue_commands_read_the_history_even_when_the_lock_table_is_missing(
    cli: Callable[..., Any], audit_db: Any
) -> None:
    """A history with an issue is never reported as "no issues" because another table is gone.

    The sensor sees the issue in the same store; the CLI must agree with it.
    """
    from flamingock_provider.sensors.issues import FlamingockIssueSensor

    audit_db.record_crash("c1", "s1")
    audit_db.execute('DROP TABLE "flamingockLock"')
    assert False is FlamingockIssueSensor(task_id="gate").poke({}).is_done

    listed, got = cli("issue", "list"), cli("issue", "get", "-c", "c1")

    assert (1, 0) == (listed.code, got.code)
    assert "c1" in listed.out


# -- connections given on the command line ------------------------------------------------


@pytest.mark.parametrize("form", ["uri", "json"])
def test_connection_given_on_the_command_line(
    cli: Callable[..., Any], shop_history: Any, form: str
) -> None:
    """``--conn-uri`` / ``--conn-json`` reach the same store without an Airflow connection."""
    if form == "uri":
        source = ["--conn-uri", conn_uri(shop_history.url)]
    else:
        conn = {"conn_type": "flamingock_sql", "extra": {"url": shop_history.url}}
        source = ["--conn-json", json.dumps(conn)]

    result = cli(*source, "issue", "list", "--json")

    assert 1 == result.code
    assert ["copy-files", "load-totals", "purge-cache"] == [i["changeId"] for i in result.json()]


PASSWORD_SOURCES = [
    pytest.param(["--conn-uri", conn_uri(UNREACHABLE_PG)], id="uri-with-url-extra"),
    pytest.param(
        [
            "--conn-uri",
            f"flamingock-sql://postgres:{SECRET}@127.0.0.1:5432/no_such_db_xyz"
            "?dialect=postgresql%2Bpsycopg",
        ],
        id="uri-with-password",
    ),
    pytest.param(
        [
            "--conn-json",
            json.dumps({"conn_type": "flamingock_sql", "extra": {"url": UNREACHABLE_PG}}),
        ],
        id="json-with-url-extra",
    ),
    pytest.param(
        [
            "--conn-json",
            json.dumps(
                {
                    "conn_type": "flamingock_sql",
                    "host": "127.0.0.1",
                    "port": 5432,
                    "login": "postgres",
                    "password": SECRET,
                    "schema": "no_such_db_xyz",
                    "extra": {"dialect": "postgresql+psycopg"},
                }
            ),
        ],
        id="json-with-password",
    ),
]


@pytest.mark.parametrize("source", PASSWORD_SOURCES)
@pytest.mark.parametrize(
    "command",
    [
        ["issue", "list"],
        ["audit", "list", "--history"],
        ["audit", "fix", "-c", "c1", "-r", "APPLIED"],
    ],
    ids=["issue-list", "audit-list", "audit-fix"],
)
def test_unreachable_store_exits_3_without_the_password(
    cli: Callable[..., Any], source: list[str], command: list[str]
) -> None:
    """A store that cannot be reached: exit 3, a message naming it, the password nowhere."""
    result = cli(*source, *command)

    assert 3 == result.code
    assert "no_such_db_xyz" in result.err
    assert (False, False) == (SECRET in result.out, SECRET in result.err)


def test_plain_database_url_as_conn_uri_is_refused_without_the_password(
    cli: Callable[..., Any],
) -> None:
    """A bare SQLAlchemy URL is not a Flamingock connection URI: exit 2, password hidden."""
    result = cli("--conn-uri", UNREACHABLE_PG, "issue", "list")

    assert 2 == result.code
    assert "not a Flamingock audit store" in result.err
    assert (False, False) == (SECRET in result.out, SECRET in result.err)


def test_unreadable_store_file_exits_3(cli: Callable[..., Any], tmp_path: Path) -> None:
    """A SQLite "store" that is not a database at all: exit 3 naming the store."""
    garbage = tmp_path / "audit.db"
    garbage.write_bytes(b"this is not a sqlite database, " * 100)

    result = cli("--conn-uri", conn_uri(f"sqlite:///{garbage}"), "issue", "list")

    assert 3 == result.code
    assert "SQL audit store" in result.err


# -- the installed console script ---------------------------------------------------------


def run_console_script(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``.venv/bin/flamingock-airflow`` with this test's environment."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=False,
    )


def test_console_script_lists_issues_with_exit_code_1(shop_history: Any) -> None:
    """The installed ``flamingock-airflow`` reads ``flamingock_default`` and exits 1 on issues."""
    result = run_console_script("issue", "list")

    assert 1 == result.returncode, result.stderr
    assert "load-totals" in result.stdout
    assert "3 open issue(s)." in result.stdout


def test_console_script_hides_the_password_of_an_unreachable_store() -> None:
    """Exit 3 from the console script; the password is in neither stdout nor stderr."""
    result = run_console_script("--conn-uri", conn_uri(UNREACHABLE_PG), "issue", "list")

    assert 3 == result.returncode, result.stderr
    assert (False, False) == (SECRET in result.stdout, SECRET in result.stderr)


def test_conn_id_finds_a_connection_kept_in_the_metadata_database(
    airflow_db: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """A connection made in the UI lives only in Airflow's database; ``--conn-id`` finds it."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    from flamingock_provider.stores.sql import SqlAuditStore

    url = f"sqlite:///{tmp_path / 'ui-audit.db'}"
    store = SqlAuditStore(url)
    store.initialize()
    store.close()
    conn_id = f"ui_made_{tmp_path.name[-8:]}".replace("-", "_")
    with create_session() as session:
        session.add(
            Connection(conn_id=conn_id, conn_type="flamingock_sql", extra=f'{{"url": "{url}"}}')
        )

    result = cli("--conn-id", conn_id, "issue", "list")

    assert (0, "No open issues.") == (result.code, result.out.strip())


def test_issue_list_notes_a_run_holding_the_lock(
    cli: Callable[..., Any], shop_history: Any
) -> None:
    """While a run holds the lock, ``issue list`` warns that a STARTED entry may be running."""
    from datetime import timedelta

    from flamingock_provider.engine.lock import DEFAULT_KEY, utc_now
    from flamingock_provider.stores.sql import SqlAuditStore

    quiet = cli("issue", "list")
    store = SqlAuditStore(shop_history.url)
    now = utc_now()
    assert store.lock_acquire(DEFAULT_KEY, "other-run@host#1", now, now + timedelta(minutes=5))
    store.close()

    busy = cli("issue", "list")

    assert ("holds lock" in quiet.err, "holds lock" in busy.err) == (False, True)
    assert "other-run@host#1" in busy.err
    assert (1, quiet.out) == (busy.code, busy.out)
