"""Apache Airflow provider for Flamingock-style audited, exactly-once changes.

Airflow reads `get_provider_info()` through the ``apache_airflow_provider`` entry point. This
module imports nothing heavy: DAG files import the provider constantly.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow: hooks, operators, sensors and connection types."""
    from flamingock_provider._provider_info import provider_info

    return provider_info(__version__)
