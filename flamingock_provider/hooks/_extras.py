"""Reading Airflow connections the same way in every Flamingock hook.

Airflow's own ``extra_dejson`` logs and swallows malformed JSON; an audit store configured from
a typo must fail loudly instead, naming the connection.
"""

from __future__ import annotations

import json
from typing import Any

from flamingock_provider.engine.errors import ValidationError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_extras(conn_id: str, extra: str | dict[str, Any] | None) -> dict[str, Any]:
    """The connection's extras as a dict; malformed JSON is a `ValidationError`."""
    if not extra:
        return {}
    if isinstance(extra, dict):
        return dict(extra)
    try:
        value = json.loads(extra)
    except json.JSONDecodeError as err:
        raise ValidationError(
            f"Airflow connection '{conn_id}': extras are not valid JSON ({err.msg} at "
            f"position {err.pos}); fix the Extra field"
        ) from None
    if not isinstance(value, dict):
        raise ValidationError(
            f"Airflow connection '{conn_id}': extras must be a JSON object, "
            f"got {type(value).__name__}"
        )
    return value


def as_bool(conn_id: str, name: str, value: Any, default: bool) -> bool:
    """A boolean extra given as JSON boolean or as a string ("true", "false", "1", "0")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default  # unset, or a field cleared in the UI
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValidationError(
        f"Airflow connection '{conn_id}': extra '{name}' must be true or false, got {value!r}"
    )
