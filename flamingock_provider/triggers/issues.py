"""FlamingockIssueTrigger: wait in the triggerer until the audit store holds no open issue.

The triggerer runs many triggers on one event loop: the connection is fetched with the async
API and every store call runs in a worker thread, so a slow database never blocks the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class FlamingockIssueTrigger(BaseTrigger):
    """Poll the audit store every ``poll_interval`` seconds until no issue is open.

    Fires ``{"status": "success", "checked": [change ids]}`` when clear, or
    ``{"status": "error", "message": ...}`` when the store cannot be read.

    :param audit_conn_id: Airflow connection of the audit store.
    :param stages: only issues of these stage names (None: all).
    :param change_ids: only issues of these changes (None: all).
    :param poll_interval: seconds between checks.
    """

    def __init__(
        self,
        audit_conn_id: str,
        stages: Sequence[str] | None = None,
        change_ids: Sequence[str] | None = None,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()
        self.audit_conn_id = audit_conn_id
        self.stages = list(stages) if stages is not None else None
        self.change_ids = list(change_ids) if change_ids is not None else None
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "audit_conn_id": self.audit_conn_id,
                "stages": self.stages,
                "change_ids": self.change_ids,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.sdk import BaseHook

        from flamingock_provider.engine.errors import FlamingockError
        from flamingock_provider.engine.issues import scan
        from flamingock_provider.hooks import _not_found, hook_for_connection

        try:
            try:
                conn = await BaseHook.aget_connection(self.audit_conn_id)
            except Exception as err:
                raise _not_found(self.audit_conn_id, err) from err
            hook = hook_for_connection(conn, self.audit_conn_id)
            store = hook.get_audit_store()
        except FlamingockError as err:
            yield TriggerEvent({"status": "error", "message": str(err)})
            return
        try:
            while True:
                issues, checked = await asyncio.to_thread(scan, store, self.stages, self.change_ids)
                if not issues:
                    yield TriggerEvent({"status": "success", "checked": checked})
                    return
                for issue in issues:
                    self.log.info("Open issue: %s", issue.describe())
                await asyncio.sleep(self.poll_interval)
        except FlamingockError as err:
            yield TriggerEvent({"status": "error", "message": str(err)})
        finally:
            await asyncio.to_thread(store.close)
