"""HookTargetSystem: any Airflow hook as a target; non-transactional, so changes run `NON_TX`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flamingock_provider.engine.errors import ValidationError
from flamingock_provider.engine.model import TxStrategy
from flamingock_provider.engine.store import AuditStore


class HookTargetSystem:
    """Offer an Airflow hook to change units as ``hook``.

    :param id: the target system id changes refer to.
    :param hook: a hook instance, or
    :param conn_id: an Airflow connection whose default hook is built when the run starts.
    """

    def __init__(self, id: str, *, hook: Any = None, conn_id: str | None = None) -> None:
        if (hook is None) == (conn_id is None):
            raise ValidationError(f"HookTargetSystem '{id}': pass exactly one of hook= or conn_id=")
        self._id = id
        self.hook = hook
        self.conn_id = conn_id

    @property
    def id(self) -> str:
        return self._id

    def injectable_names(self) -> frozenset[str]:
        return frozenset({"hook"})

    def open(self, store: AuditStore) -> _HookSession:
        hook = self.hook
        if hook is None:
            from airflow.sdk import BaseHook

            assert self.conn_id is not None
            hook = BaseHook.get_connection(self.conn_id).get_hook()  # type: ignore[no-untyped-call]
        return _HookSession(hook)


class _HookSession:
    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def strategy(self, transactional: bool) -> TxStrategy:
        return TxStrategy.NON_TX

    def prepare(self) -> None:
        """Nothing to create."""

    @contextmanager
    def resources(self) -> Iterator[Mapping[str, object]]:
        yield {"hook": self.hook}

    def transaction(self) -> Any:
        raise NotImplementedError("a hook target has no transactions")

    def has_marker(self, change_id: str, execution_id: str) -> bool:
        return False

    def clear_marker(self, change_id: str, execution_id: str) -> None:
        """No markers here."""

    def close(self) -> None:
        """The hook belongs to the caller."""
