"""What every Flamingock hook shares: the connection, its extras, the form, closing.

Subclasses add how their connection becomes a client and an audit store; nothing here does
I/O before a property is read.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from flamingock_provider.hooks._extras import parse_extras


class FlamingockHook(BaseHook):
    """Base of the audit store hooks.

    :param flamingock_conn_id: the Airflow connection id.
    :param connection: an already fetched connection (no lookup then).
    """

    conn_name_attr = "flamingock_conn_id"
    default_conn_name = "flamingock_default"
    ui_field_behaviour_name = ""
    """Name of this hook's form description in `_provider_info` (one source for both)."""

    def __init__(
        self, flamingock_conn_id: str = default_conn_name, *, connection: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.flamingock_conn_id = flamingock_conn_id
        self._connection = connection

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The same form description Airflow reads from the provider info."""
        from flamingock_provider import _provider_info

        behaviour: dict[str, Any] = getattr(_provider_info, cls.ui_field_behaviour_name)
        return behaviour

    @cached_property
    def connection(self) -> Any:
        return self._connection or self.get_connection(self.flamingock_conn_id)

    @cached_property
    def extras(self) -> dict[str, Any]:
        return parse_extras(self.flamingock_conn_id, self.connection.extra)

    def close(self) -> None:
        """Close the audit store (and its client) if this hook built one."""
        store = self.__dict__.get("_store")
        if store is not None:
            store.close()

    def __enter__(self) -> FlamingockHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
