"""``flamingock-airflow``: list the audit history, inspect issues, resolve them.

The audit store comes from an Airflow connection (``--conn-id``, default ``flamingock_default``)
or, outside an Airflow deployment, from ``--conn-uri`` / ``--conn-json``.
Exit codes: 0 success; 1 ``issue list`` found issues; 2 bad usage or bad input (nothing
written); 3 the audit store could not be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from flamingock_provider.engine.errors import FlamingockError, ValidationError
from flamingock_provider.engine.issues import (
    DEFAULT_FIX_AUTHOR,
    Resolution,
    audit_list,
    fix_issue,
    get_issue,
    guidance,
    list_issues,
)
from flamingock_provider.engine.model import AuditEntry, Issue, error_summary
from flamingock_provider.engine.store import AuditStore

EXIT_OK, EXIT_ISSUES, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flamingock-airflow",
        description="Inspect and resolve Flamingock audit history stored by Airflow.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--conn-id", default="flamingock_default", help="Airflow connection id")
    source.add_argument("--conn-uri", help="connection URI, e.g. 'flamingock-sql://?url=...'")
    source.add_argument("--conn-json", help="connection as JSON (the AIRFLOW_CONN_* JSON form)")
    groups = parser.add_subparsers(dest="group", required=True)

    audit = groups.add_parser("audit", help="the audit history").add_subparsers(
        dest="command", required=True
    )
    listing = audit.add_parser("list", help="latest entry per change (or --history)")
    listing.add_argument("--history", action="store_true", help="every entry, oldest first")
    listing.add_argument("--since", type=_iso, help="only entries at or after this ISO time")
    listing.add_argument("--json", action="store_true", help="stable JSON output")
    fix = audit.add_parser("fix", help="resolve a change's issue")
    fix.add_argument("-c", "--change-id", required=True)
    fix.add_argument(
        "-r", "--resolution", required=True, type=str.upper, choices=[r.name for r in Resolution]
    )
    fix.add_argument("--author", default=DEFAULT_FIX_AUTHOR)
    fix.add_argument("--json", action="store_true")

    issue = groups.add_parser("issue", help="changes that need a person").add_subparsers(
        dest="command", required=True
    )
    issue_list = issue.add_parser("list", help="open issues; exit code 1 when there are any")
    issue_list.add_argument("--json", action="store_true")
    issue_get = issue.add_parser("get", help="one issue (the oldest unless -c)")
    issue_get.add_argument("-c", "--change-id")
    issue_get.add_argument("--guidance", action="store_true", help="what happened, what to do")
    issue_get.add_argument("--json", action="store_true")
    return parser


def _iso(text: str) -> datetime:
    import pendulum

    try:
        parsed = pendulum.parse(text)
    except Exception as err:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from err
    if not isinstance(parsed, datetime):
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}")
    return parsed


def open_store(args: argparse.Namespace) -> AuditStore:
    """The audit store named on the command line."""
    from flamingock_provider.hooks import hook_for_connection

    if args.conn_uri or args.conn_json:
        from airflow.sdk import Connection

        conn_id = "cli"
        try:
            if args.conn_uri:
                conn = Connection.from_uri(args.conn_uri, conn_id=conn_id)
            else:
                conn = Connection.from_json(args.conn_json, conn_id=conn_id)
        except (ValueError, TypeError, AttributeError) as err:
            kind = "--conn-uri" if args.conn_uri else "--conn-json"
            raise ValidationError(f"{kind} is not a valid connection: {err}") from None
        return hook_for_connection(conn, conn_id).get_audit_store()  # type: ignore[no-any-return]
    return hook_for_connection(_airflow_connection(args.conn_id), args.conn_id).get_audit_store()  # type: ignore[no-any-return]


def _airflow_connection(conn_id: str) -> Any:
    """Look the connection up where Airflow keeps it, the metadata database included.

    The task SDK's lookup (environment variables, secrets backends) comes first; outside a task
    it skips the metadata database, where connections made in the UI live, so that is read
    next, through Airflow's own model.
    """
    from airflow.sdk import BaseHook

    from flamingock_provider.hooks import _not_found

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as err:
        missing = _not_found(conn_id, err)
        if missing is err:
            raise
    try:
        from airflow.models.connection import Connection as StoredConnection
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            stored = session.scalar(
                select(StoredConnection).where(StoredConnection.conn_id == conn_id)
            )
            if stored is not None:
                session.expunge(stored)
    except Exception as err:
        raise missing from err
    if stored is None:
        raise missing
    return stored


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        store = open_store(args)
        try:
            return _dispatch(args, store, out)
        finally:
            store.close()
    except ValidationError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except FlamingockError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STORE


def _dispatch(args: argparse.Namespace, store: AuditStore, out: TextIO) -> int:
    if args.group == "audit" and args.command == "list":
        entries = audit_list(store, history=args.history, since=args.since)
        _emit(out, args.json, [e.as_json() for e in entries], lambda: _entries_table(entries))
        return EXIT_OK
    if args.group == "audit" and args.command == "fix":
        entry = fix_issue(store, args.change_id, args.resolution, author=args.author)
        text = (
            f"Change '{entry.change_id}' marked {entry.state.value} by {entry.author} "
            f"(execution {entry.execution_id})."
        )
        _emit(out, args.json, entry.as_json(), lambda: text)
        return EXIT_OK
    if not store.is_initialized():
        print(
            f"warning: {store.description} holds no Flamingock tables yet: nothing has run "
            "there (check the connection if that is unexpected)",
            file=sys.stderr,
        )
    if args.group == "issue" and args.command == "list":
        issues = list_issues(store)
        _emit(out, args.json, [_issue_json(i) for i in issues], lambda: _issues_table(issues))
        if issues:
            _note_running(store)
        return EXIT_ISSUES if issues else EXIT_OK
    # issue get
    issue = get_issue(store, args.change_id)
    if issue is None:
        _emit(out, args.json, None, lambda: "No open issues.")
        return EXIT_OK
    record = _issue_json(issue, with_guidance=args.guidance)
    _emit(out, args.json, record, lambda: _issue_text(issue, args.guidance))
    return EXIT_OK


def _note_running(store: AuditStore) -> None:
    """Say on stderr when a run holds the lock: its change in progress looks like STARTED."""
    from flamingock_provider.engine.lock import DEFAULT_KEY, utc_now

    try:
        holder = store.lock_holder(DEFAULT_KEY)
    except FlamingockError:
        return
    if holder is not None and holder.expires_at > utc_now():
        print(
            f"note: a run holds lock '{DEFAULT_KEY}' ({holder.owner}, until "
            f"{holder.expires_at.isoformat()}): a STARTED entry may be its change still running; "
            "check again after it ends before fixing.",
            file=sys.stderr,
        )


def _emit(out: TextIO, as_json: bool, value: Any, text: Any) -> None:
    if as_json:
        json.dump(value, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        out.write(text() + "\n")


def _issue_json(issue: Issue, with_guidance: bool = False) -> dict[str, Any]:
    entry = issue.entry
    record = {
        "changeId": issue.change_id,
        "stageId": issue.stage_id,
        "state": entry.state.value,
        "createdAt": entry.created_at.isoformat(),
        "executionId": entry.execution_id,
        "txStrategy": entry.tx_strategy.value,
        "recoveryStrategy": entry.recovery_strategy.value,
        "targetSystemId": entry.target_system_id,
        "error": error_summary(entry.error_trace),
    }
    if with_guidance:
        record["guidance"] = guidance(issue)
    return record


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    line = "  ".join
    parts = [line(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    parts.append(line("-" * w for w in widths))
    parts += [line(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(p.rstrip() for p in parts)


def _entries_table(entries: Sequence[AuditEntry]) -> str:
    if not entries:
        return "No audit entries."
    rows = [
        (
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.stage_id,
            e.change_id,
            e.state.value,
            e.tx_strategy.value,
            e.author,
        )
        for e in entries
    ]
    return _table(("CREATED (UTC)", "STAGE", "CHANGE", "STATE", "TX STRATEGY", "AUTHOR"), rows)


def _issues_table(issues: Sequence[Issue]) -> str:
    if not issues:
        return "No open issues."
    rows = [
        (
            i.change_id,
            i.stage_id,
            i.state.value,
            i.entry.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            error_summary(i.entry.error_trace) or "-",
        )
        for i in issues
    ]
    table = _table(("CHANGE", "STAGE", "STATE", "SINCE (UTC)", "ERROR"), rows)
    hint = "Inspect with `issue get -c <change> --guidance`; resolve with `audit fix`."
    return f"{table}\n{len(issues)} open issue(s). {hint}"


def _issue_text(issue: Issue, with_guidance: bool) -> str:
    text = issue.describe()
    return f"{text}\n\n{guidance(issue)}" if with_guidance else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
