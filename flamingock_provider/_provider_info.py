"""The provider description Airflow reads: hooks, operators, sensors, connection types."""

from __future__ import annotations

from typing import Any

_STR = {"type": ["string", "null"]}
_BOOL_TRUE = {"type": ["boolean", "null"], "default": True}


def _table_fields() -> dict[str, Any]:
    return {
        "audit_table": {
            "label": "Audit table",
            "description": "History table name (default flamingockAuditLog)",
            "schema": {**_STR, "default": "flamingockAuditLog"},
        },
        "lock_table": {
            "label": "Lock table",
            "description": "Lock table name (default flamingockLock)",
            "schema": {**_STR, "default": "flamingockLock"},
        },
        "auto_create": {
            "label": "Create tables",
            "description": "Create missing tables; when off, check them and fail clearly",
            "schema": _BOOL_TRUE,
        },
    }


SQL_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": [],
    "relabeling": {"schema": "Database"},
    "placeholders": {
        "host": "db.example.com (leave empty when extra 'url' is set)",
        "schema": "flamingock",
        "extra": '{"url": "sqlite:////var/lib/airflow/flamingock.db"}',
    },
}


def provider_info(version: str) -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-flamingock",
        "name": "Flamingock",
        "description": "Versioned change units run exactly once under a distributed lock, "
        "recorded in an audit store, with issues that block until a person resolves them.",
        "versions": [version],
        "integrations": [
            {
                "integration-name": "Flamingock",
                "external-doc-url": "https://www.flamingock.io",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Flamingock",
                "python-modules": ["flamingock_provider.hooks.sql"],
            }
        ],
        "operators": [
            {
                "integration-name": "Flamingock",
                "python-modules": [
                    "flamingock_provider.operators.flamingock",
                    "flamingock_provider.operators.fix",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Flamingock",
                "python-modules": ["flamingock_provider.sensors.issues"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Flamingock",
                "python-modules": ["flamingock_provider.triggers.issues"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "flamingock_provider.hooks.sql.FlamingockSqlHook",
                "hook-name": "Flamingock SQL audit store",
                "connection-type": "flamingock_sql",
                "conn-fields": {
                    "url": {
                        "label": "SQLAlchemy URL",
                        "description": "e.g. sqlite:////var/lib/airflow/flamingock.db; "
                        "overrides host/port/login/schema",
                        "schema": _STR,
                    },
                    "dialect": {
                        "label": "Dialect",
                        "description": "SQLAlchemy dialect+driver when host/port are used",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "postgresql+psycopg",
                            "enum": ["postgresql+psycopg", "mysql+pymysql", "sqlite"],
                        },
                    },
                    **_table_fields(),
                },
                "ui-field-behaviour": SQL_UI_FIELD_BEHAVIOUR,
            }
        ],
    }
