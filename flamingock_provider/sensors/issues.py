"""FlamingockIssueSensor: hold downstream tasks while the audit store has open issues."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from flamingock_provider.changes import Stage

if TYPE_CHECKING:
    from airflow.sdk import Context

    from flamingock_provider.engine.model import Issue

DEFAULT_CONN_ID = "flamingock_default"


class FlamingockIssueSensor(BaseSensorOperator):
    """Succeed once no issue is open (in ``stages`` / ``change_ids``, or anywhere).

    Each poke reads the store once and logs every open issue with how to resolve it. On
    success the XCom is the list of change ids checked. Works in ``poke`` and ``reschedule``
    mode; ``deferrable=True`` waits in the triggerer (`FlamingockIssueTrigger`).

    :param audit_conn_id: Airflow connection of the audit store.
    :param stages: stage names (or `Stage`s) to check; None checks all.
    :param change_ids: change ids to check; None checks all.
    :param deferrable: wait in the triggerer instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = ("audit_conn_id", "stages", "change_ids")
    ui_color = "#ffd6a5"

    def __init__(
        self,
        *,
        audit_conn_id: str = DEFAULT_CONN_ID,
        stages: Sequence[str | Stage] | None = None,
        change_ids: Sequence[str] | None = None,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.audit_conn_id = audit_conn_id
        self.stages = (
            [s.name if isinstance(s, Stage) else str(s) for s in stages]
            if stages is not None
            else None
        )
        self.change_ids = list(change_ids) if change_ids is not None else None
        self.deferrable = deferrable

    def poke(self, context: Context) -> PokeReturnValue:
        from flamingock_provider.engine.errors import FlamingockError
        from flamingock_provider.engine.issues import scan
        from flamingock_provider.hooks import get_audit_hook

        try:
            store = get_audit_hook(self.audit_conn_id).get_audit_store()
            try:
                issues, checked = scan(store, self.stages, self.change_ids)
            finally:
                store.close()
        except FlamingockError as err:
            from airflow.sdk.exceptions import AirflowException

            raise AirflowException(str(err)) from err
        for issue in issues:
            self.log.warning("Open issue: %s. %s", issue.describe(), self._how_to_resolve(issue))
        if issues:
            self.log.info("%d open issue(s); waiting.", len(issues))
            return PokeReturnValue(is_done=False)
        self.log.info("No open issues among %d change(s).", len(checked))
        return PokeReturnValue(is_done=True, xcom_value=checked)

    def _how_to_resolve(self, issue: Issue) -> str:
        return (
            f"Inspect: flamingock-airflow --conn-id {self.audit_conn_id} issue get -c "
            f"{issue.change_id} --guidance; resolve: ... audit fix -c {issue.change_id} "
            "-r APPLIED|ROLLED_BACK, or trigger the flamingock_fix_issue DAG"
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        from flamingock_provider.triggers.issues import FlamingockIssueTrigger

        self.defer(
            trigger=FlamingockIssueTrigger(
                audit_conn_id=self.audit_conn_id,
                stages=self.stages,
                change_ids=self.change_ids,
                poll_interval=float(self.poke_interval),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: succeed with the checked ids, or fail clearly."""
        if event.get("status") == "success":
            self.log.info("No open issues among %d change(s).", len(event.get("checked", [])))
            return event.get("checked", [])
        from airflow.sdk.exceptions import AirflowException

        raise AirflowException(f"Issue check failed: {event.get('message')}")
