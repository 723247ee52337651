"""FlamingockFixIssueOperator: resolve an issue from Airflow, recording who resolved it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_CONN_ID = "flamingock_default"


class FlamingockFixIssueOperator(BaseOperator):
    """Append a manual resolution for a change's open issue.

    The author is ``author`` when given, else the user who triggered the DAG run (when Airflow
    knows one), else ``airflow``. Nothing is written unless the change has an open issue.

    :param change_id: the change whose issue is resolved.
    :param resolution: ``APPLIED`` (it is in place) or ``ROLLED_BACK`` (apply it again).
    :param audit_conn_id: Airflow connection of the audit store.
    :param author: who resolved it; defaults to the triggering user.
    """

    template_fields: Sequence[str] = ("audit_conn_id", "change_id", "resolution", "author")

    def __init__(
        self,
        *,
        change_id: str,
        resolution: str,
        audit_conn_id: str = DEFAULT_CONN_ID,
        author: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.change_id = change_id
        self.resolution = resolution
        self.audit_conn_id = audit_conn_id
        self.author = author

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException

        from flamingock_provider.engine.errors import FlamingockError, ValidationError
        from flamingock_provider.engine.issues import Resolution, fix_issue
        from flamingock_provider.hooks import get_audit_hook

        try:
            if not str(self.change_id or "").strip():
                raise ValidationError("change_id is required: the id of the change with an issue")
            resolution = Resolution.parse(self.resolution)
            store = get_audit_hook(self.audit_conn_id).get_audit_store()
            try:
                entry = fix_issue(
                    store, str(self.change_id).strip(), resolution, author=self._author(context)
                )
            finally:
                store.close()
        except FlamingockError as err:
            raise AirflowException(str(err)) from err
        self.log.info(
            "Change '%s' marked %s by %s", entry.change_id, entry.state.value, entry.author
        )
        return entry.as_json()

    def _author(self, context: Context) -> str:
        if self.author:
            return str(self.author)
        dag_run = context.get("dag_run") if hasattr(context, "get") else None
        user = getattr(dag_run, "triggering_user_name", None)
        return str(user) if user else "airflow"
