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


MONGODB_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": [],
    "relabeling": {"schema": "Database"},
    "placeholders": {
        "host": "mongo1.example.com,mongo2.example.com:27018 (the SRV name when srv is on)",
        "port": "27017 (empty with srv)",
        "login": "flamingock_airflow",
        "schema": "flamingock",
        "extra": '{"auth_source": "admin", "tls": true, "options": {"replicaSet": "rs0"}}',
    },
}


def _mongodb_fields() -> dict[str, Any]:
    def text(label: str, description: str, default: str | None = None) -> dict[str, Any]:
        schema: dict[str, Any] = dict(_STR) if default is None else {**_STR, "default": default}
        return {"label": label, "description": description, "schema": schema}

    def choice(label: str, description: str, default: str, values: list[str]) -> dict[str, Any]:
        return {
            "label": label,
            "description": description,
            "schema": {"type": ["string", "null"], "default": default, "enum": values},
        }

    return {
        "srv": {
            "label": "SRV (mongodb+srv)",
            "description": "Host is a DNS SRV name; leave the port empty",
            "schema": {"type": ["boolean", "null"], "default": False},
        },
        "tls": {
            "label": "TLS",
            "description": "Connect with TLS (on by default with SRV)",
            "schema": {"type": ["boolean", "null"]},
        },
        "auth_source": text("Auth database", "Database holding the user (default admin)"),
        "audit_collection": text("Audit collection", "History collection", "flamingockAuditLog"),
        "lock_collection": text("Lock collection", "Lock collection", "flamingockLock"),
        "auto_create": {
            "label": "Create collections and indexes",
            "description": "When off (DocumentDB, Cosmos DB), check them and fail clearly",
            "schema": _BOOL_TRUE,
        },
        "read_concern": choice(
            "Read concern", "Of every read", "majority", ["majority", "local", "linearizable"]
        ),
        "write_concern": text(
            "Write concern w", "majority, a number >= 1, or a tag; journal stays on", "majority"
        ),
        "read_preference": choice(
            "Read preference",
            "Keep primary for runners (see docs)",
            "primary",
            ["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"],
        ),
        "lock_clock": choice(
            "Lock clock", "Whose clock decides lock expiry", "runner", ["runner", "server"]
        ),
    }


DYNAMODB_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "port", "schema"],
    "relabeling": {"login": "AWS access key id", "password": "AWS secret access key"},
    "placeholders": {
        "login": "empty: boto3's default chain (instance role, environment, profile)",
        "password": "empty with the default chain",
        "extra": '{"region_name": "eu-west-1"}',
    },
}


def _dynamodb_fields() -> dict[str, Any]:
    def capacity(label: str) -> dict[str, Any]:
        return {
            "label": label,
            "description": "With billing mode PROVISIONED, for the tables it creates",
            "schema": {"type": ["integer", "null"], "minimum": 1},
        }

    return {
        "region_name": {
            "label": "Region",
            "description": "AWS region, e.g. eu-west-1 (empty: AWS_DEFAULT_REGION / profile)",
            "schema": _STR,
        },
        "endpoint_url": {
            "label": "Endpoint URL",
            "description": "Another endpoint, e.g. http://127.0.0.1:8000 for DynamoDB Local",
            "schema": {**_STR, "format": "url"},
        },
        "aws_session_token": {
            "label": "Session token",
            "description": "With temporary credentials (STS)",
            "schema": {**_STR, "format": "password"},
        },
        **_table_fields(),
        "billing_mode": {
            "label": "Billing mode",
            "description": "Of the tables auto_create makes",
            "schema": {
                "type": ["string", "null"],
                "default": "PAY_PER_REQUEST",
                "enum": ["PAY_PER_REQUEST", "PROVISIONED"],
            },
        },
        "read_capacity_units": capacity("Read capacity units"),
        "write_capacity_units": capacity("Write capacity units"),
    }


COUCHBASE_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["port", "schema"],
    "relabeling": {"host": "Connection string", "login": "Username"},
    "placeholders": {
        "host": "couchbases://cb1.example.com,cb2.example.com (couchbase:// without TLS)",
        "login": "flamingock_airflow",
        "extra": '{"bucket": "flamingock", "scope": "_default", "durability": "majority"}',
    },
}


def _couchbase_fields() -> dict[str, Any]:
    def text(label: str, description: str, default: str | None = None) -> dict[str, Any]:
        schema: dict[str, Any] = dict(_STR) if default is None else {**_STR, "default": default}
        return {"label": label, "description": description, "schema": schema}

    return {
        "bucket": text("Bucket", "Bucket holding the audit store (it must exist)"),
        "scope": text("Scope", "Scope of the audit and lock collections", "_default"),
        "audit_collection": text("Audit collection", "History collection", "flamingockAuditLog"),
        "lock_collection": text("Lock collection", "Lock collection", "flamingockLock"),
        "auto_create": {
            "label": "Create scope and collections",
            "description": "Create missing ones (needs Manage Scopes); when off, check and fail",
            "schema": _BOOL_TRUE,
        },
        "durability": {
            "label": "Durability",
            "description": "Of every audit and lock write",
            "schema": {
                "type": ["string", "null"],
                "default": "majority",
                "enum": ["none", "majority", "majority_and_persist_active", "persist_to_majority"],
            },
        },
        "cert_path": text("CA certificate", "Trust store path for couchbases:// with a private CA"),
        "connect_timeout": {
            "label": "Connect timeout (s)",
            "description": "Bound on opening the connection (default 10)",
            "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
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
                "python-modules": [
                    "flamingock_provider.hooks.sql",
                    "flamingock_provider.hooks.mongodb",
                    "flamingock_provider.hooks.dynamodb",
                    "flamingock_provider.hooks.couchbase",
                ],
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
            },
            {
                "hook-class-name": "flamingock_provider.hooks.mongodb.FlamingockMongoDBHook",
                "hook-name": "Flamingock MongoDB audit store",
                "connection-type": "flamingock_mongodb",
                "conn-fields": _mongodb_fields(),
                "ui-field-behaviour": MONGODB_UI_FIELD_BEHAVIOUR,
            },
            {
                "hook-class-name": "flamingock_provider.hooks.dynamodb.FlamingockDynamoDBHook",
                "hook-name": "Flamingock DynamoDB audit store",
                "connection-type": "flamingock_dynamodb",
                "conn-fields": _dynamodb_fields(),
                "ui-field-behaviour": DYNAMODB_UI_FIELD_BEHAVIOUR,
            },
            {
                "hook-class-name": "flamingock_provider.hooks.couchbase.FlamingockCouchbaseHook",
                "hook-name": "Flamingock Couchbase audit store",
                "connection-type": "flamingock_couchbase",
                "conn-fields": _couchbase_fields(),
                "ui-field-behaviour": COUCHBASE_UI_FIELD_BEHAVIOUR,
            },
        ],
    }
