"""FlamingockOperator: run the pipeline's pending change units under the audit store's lock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from flamingock_provider.changes import Stage
from flamingock_provider.engine.errors import FlamingockError, ValidationError
from flamingock_provider.engine.lock import DEFAULT_KEY, DEFAULT_LEASE, DEFAULT_RETRY, DEFAULT_WAIT

if TYPE_CHECKING:
    from airflow.sdk import Context

    from flamingock_provider.engine.target import TargetSystem

DEFAULT_CONN_ID = "flamingock_default"


def _duration(name: str, value: timedelta | float | int) -> timedelta:
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    else:
        raise ValidationError(f"{name} must be a timedelta or a number of seconds, got {value!r}")
    if result <= timedelta(0):
        raise ValidationError(f"{name} must be positive, got {value!r}")
    return result


class FlamingockOperator(BaseOperator):
    """Apply every pending change unit of ``stages``, each exactly once across all workers.

    Returns (XCom) ``{"execution_id", "applied", "skipped", "failed", "stages", ...}``.
    Fails the task, naming the change, when one fails; and naming every issue when a stage is
    blocked by one.

    :param stages: the `Stage`s to run, in order.
    :param target_systems: what change units work on (`SqlTargetSystem`, `HookTargetSystem`..).
    :param audit_conn_id: Airflow connection of the audit store (a ``flamingock_*`` conn type).
    :param lock_key: lock record key; pipelines with different keys run independently.
    :param lock_lease: lease length (timedelta or seconds); extended every third of it.
    :param lock_wait: how long to wait for another run to finish before failing.
    :param lock_retry: pause between attempts while waiting.
    :param dry_run: plan only: report what would run, write nothing.
    """

    template_fields: Sequence[str] = ("audit_conn_id", "lock_key")
    ui_color = "#ff8c42"

    def __init__(
        self,
        *,
        stages: Sequence[Stage],
        target_systems: Sequence[TargetSystem] = (),
        audit_conn_id: str = DEFAULT_CONN_ID,
        lock_key: str = DEFAULT_KEY,
        lock_lease: timedelta | float = DEFAULT_LEASE,
        lock_wait: timedelta | float = DEFAULT_WAIT,
        lock_retry: timedelta | float = DEFAULT_RETRY,
        dry_run: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stages = list(stages)
        self.target_systems = list(target_systems)
        ids = [t.id for t in self.target_systems]
        if len(set(ids)) != len(ids):
            raise ValidationError(f"target_systems have duplicate ids: {ids}")
        self.audit_conn_id = audit_conn_id
        self.lock_key = lock_key
        self.lock_lease = _duration("lock_lease", lock_lease)
        self.lock_wait = _duration("lock_wait", lock_wait)
        self.lock_retry = _duration("lock_retry", lock_retry)
        # Not `self.dry_run`: BaseOperator has a dry_run() method of its own.
        self.plan_only = dry_run

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException

        try:
            summary = self._run(context)
        except FlamingockError as err:
            result = getattr(err, "result", None)
            if result is not None:
                self.log.info("Run summary: %s", json.dumps(result.summary()))
            raise AirflowException(str(err)) from err
        self.log.info(
            "Flamingock %s: applied %d, skipped %d%s",
            "dry run" if self.plan_only else "run",
            len(summary["applied"]),
            len(summary["skipped"]),
            f", pending {summary['pending']}" if self.plan_only else "",
        )
        return summary

    def _run(self, context: Context) -> dict[str, Any]:
        from flamingock_provider.engine.discovery import load_pipeline
        from flamingock_provider.engine.lock import new_owner
        from flamingock_provider.engine.runner import PipelineRunner
        from flamingock_provider.hooks import get_audit_hook

        names = {t.id: t.injectable_names() for t in self.target_systems}
        pipeline = load_pipeline(self.stages, names)  # validates before anything is written
        hook = get_audit_hook(self.audit_conn_id)
        store = hook.get_audit_store()
        try:
            runner = PipelineRunner(
                store,
                pipeline,
                self.target_systems,
                lock_key=self.lock_key,
                lock_lease=self.lock_lease,
                lock_wait=self.lock_wait,
                lock_retry=self.lock_retry,
                owner=new_owner(self.task_id),
                extra_injectables={"context": context, "log": self.log},
                logger=self.log,  # type: ignore[arg-type]
            )
            return runner.run(dry_run=self.plan_only).summary()
        finally:
            store.close()
