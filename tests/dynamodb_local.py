"""DynamoDB Local for the test session (ARCHITECTURE.md §7): fetched once, started on first use.

The emulator comes from the npm tarball ``amplify-dynamodb-simulator@2.9.30``
(``package/emulator/DynamoDBLocal.jar`` 1.25.1 and its native libraries), packed once into
``.cache/dynamodb-local/`` (git-ignored). The first test that needs it calls `require()` (the
contract suite's backend does, and the session fixture `dynamodb_local`): it starts
``java -jar DynamoDBLocal.jar -inMemory -sharedDb`` on a free port, in a working directory of its
own, polls ``ListTables`` until it answers, and stops it by its pid when the process exits.
``FLAMINGOCK_TEST_DYNAMODB_ENDPOINT`` points the tests at an emulator you run yourself instead.
When it cannot start, its tests are skipped with the reason, or fail under
``FLAMINGOCK_TEST_REQUIRE_SERVERS=1``, as for the other servers (`servers.py`).

``python tests/dynamodb_local.py --fetch`` only fetches the tarball (``make services`` runs it).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "amplify-dynamodb-simulator@2.9.30"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "dynamodb-local"
EMULATOR = CACHE / "package" / "emulator"
ENDPOINT_ENV = "FLAMINGOCK_TEST_DYNAMODB_ENDPOINT"
REQUIRE_ENV = "FLAMINGOCK_TEST_REQUIRE_SERVERS"
START_TIMEOUT_SECONDS = 60
REGION = "us-east-1"
ACCESS_KEY_ID = "flamingocktest"
SECRET_ACCESS_KEY = "flamingock-test-secret"


@dataclass
class DynamoDBLocal:
    """A running DynamoDB Local: its endpoint, and the process when this session started it."""

    endpoint_url: str
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    _client: Any = field(default=None, repr=False)

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for `DynamoDBAuditStore` / `DynamoDBTargetSystem` on this emulator."""
        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": REGION,
            "aws_access_key_id": ACCESS_KEY_ID,
            "aws_secret_access_key": SECRET_ACCESS_KEY,
        }
        options.update(overrides)
        return options

    def client(self) -> Any:
        """A plain boto3 client on the emulator, for set-up and inspection (built once)."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self, max_attempts: int = 3) -> Any:
        """A new plain boto3 client on the emulator."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(retries={"mode": "standard", "max_attempts": max_attempts}),
        )

    def table_names(self, prefix: str = "") -> list[str]:
        client = self.client()
        names: list[str] = []
        start: dict[str, Any] = {}
        while True:
            page = client.list_tables(**start)
            names.extend(n for n in page.get("TableNames", []) if n.startswith(prefix))
            if "LastEvaluatedTableName" not in page:
                return names
            start = {"ExclusiveStartTableName": page["LastEvaluatedTableName"]}

    def delete_tables(self, prefix: str) -> list[str]:
        """Delete every table whose name starts with ``prefix``; return their names."""
        client = self.client()
        names = self.table_names(prefix)
        for name in names:
            with contextlib.suppress(client.exceptions.ResourceNotFoundException):
                client.delete_table(TableName=name)
        return names

    def stop(self) -> None:
        """Stop the emulator this session started (by its pid) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- fetching ----------------------------------------------------------------------------------


def fetch() -> Path:
    """The emulator folder, packing and unpacking the npm tarball into the cache if missing."""
    jar = EMULATOR / "DynamoDBLocal.jar"
    if jar.exists():
        return EMULATOR
    CACHE.mkdir(parents=True, exist_ok=True)
    with _file_lock(CACHE / ".fetch.lock"):
        if jar.exists():  # another session fetched it while we waited
            return EMULATOR
        staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=CACHE))
        try:
            subprocess.run(
                ["npm", "pack", PACKAGE, "--pack-destination", str(staging), "--silent"],
                check=True,
                capture_output=True,
                timeout=600,
            )
            (tarball,) = staging.glob("*.tgz")
            with tarfile.open(tarball) as archive:
                try:
                    archive.extractall(staging, filter="data")
                except TypeError:  # Python without extraction filters
                    archive.extractall(staging)  # npm's own tarball
            shutil.rmtree(CACHE / "package", ignore_errors=True)
            (staging / "package").rename(CACHE / "package")
            tarball.rename(CACHE / tarball.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return EMULATOR


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- starting ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child: no orphaned JVM if pytest is killed
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _answers(local: DynamoDBLocal) -> bool:
    try:
        local.new_client(max_attempts=1).list_tables(Limit=1)
    except Exception:
        return False
    return True


def start() -> DynamoDBLocal:
    """Start DynamoDB Local on a free port of 127.0.0.1 and wait until it answers.

    :raises RuntimeError: with the reason (no Java, fetch failed, emulator exited or timed out).
    """
    external = os.environ.get(ENDPOINT_ENV)
    if external:
        local = DynamoDBLocal(external)
        if not _answers(local):
            raise RuntimeError(f"{ENDPOINT_ENV}={external} does not answer ListTables")
        return local
    if shutil.which("java") is None:
        raise RuntimeError("no `java` on PATH (DynamoDB Local needs Java 17)")
    emulator = fetch()
    workdir = Path(tempfile.mkdtemp(prefix="flamingock-dynamodb-local-"))
    port = _free_port()
    log = open(workdir / "emulator.log", "wb")  # noqa: SIM115 - the process keeps it
    command = [
        "java",
        f"-Djava.library.path={emulator / 'DynamoDBLocal_lib'}",
        "-jar",
        str(emulator / "DynamoDBLocal.jar"),
        "-inMemory",
        "-sharedDb",
        "-disableTelemetry",
        "-port",
        str(port),
    ]
    process = subprocess.Popen(
        command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
    )
    log.close()
    local = DynamoDBLocal(f"http://127.0.0.1:{port}", process, workdir)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _answers(local):
        if process.poll() is not None or time.monotonic() > deadline:
            output = (workdir / "emulator.log").read_text(errors="replace")[-2000:]
            local.stop()
            raise RuntimeError(f"DynamoDB Local did not start on port {port}:\n{output}")
        time.sleep(0.1)
    atexit.register(local.stop)
    return local


_started: DynamoDBLocal | None = None
_failure: str | None = None


def require() -> DynamoDBLocal:
    """The session's DynamoDB Local, started on first call; skips (or fails) when it cannot."""
    global _started, _failure
    if _started is None and _failure is None:
        try:
            _started = start()
        except Exception as err:
            _failure = f"{type(err).__name__}: {err}"
    if _started is not None:
        return _started
    message = f"DynamoDB Local is not available ({_failure})"
    if os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; {REQUIRE_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(message)


try:
    import pytest
except ImportError:  # `--fetch` may run on an interpreter without pytest
    pytest = None  # type: ignore[assignment]


@dataclass
class Connections:
    """Airflow connections to DynamoDB Local whose tables all carry one test's ``prefix``."""

    local: DynamoDBLocal
    prefix: str
    monkeypatch: Any

    def name(self, suffix: str) -> str:
        """A table name owned by this test (deleted at teardown)."""
        return f"{self.prefix}{suffix}"

    def define(self, conn_id: str = "flamingock_default", **extras: Any) -> None:
        """Export ``AIRFLOW_CONN_<ID>``: a ``flamingock_dynamodb`` connection to the emulator."""
        import json

        options = self.local.options()
        fields = {
            "conn_type": "flamingock_dynamodb",
            "login": options["aws_access_key_id"],
            "password": options["aws_secret_access_key"],
            "extra": {
                "endpoint_url": options["endpoint_url"],
                "region_name": options["region_name"],
                "audit_table": self.name("audit"),
                "lock_table": self.name("lock"),
                **extras,
            },
        }
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))

    def store(self, **overrides: Any) -> Any:
        """A `DynamoDBAuditStore` on the connections' tables (close it when done)."""
        from flamingock_provider.stores.dynamodb import DynamoDBAuditStore

        options = {"audit_table": self.name("audit"), "lock_table": self.name("lock")}
        return DynamoDBAuditStore(**self.local.options(**{**options, **overrides}))

    def create_table(self, suffix: str, key: str = "id") -> str:
        """Create table ``<prefix><suffix>`` with the string hash key ``key``; its name."""
        name = self.name(suffix)
        self.local.client().create_table(
            TableName=name,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        return name

    def items(self, suffix: str) -> list[dict[str, Any]]:
        """Every item of table ``<prefix><suffix>`` (low-level form)."""
        page = self.local.client().scan(TableName=self.name(suffix), ConsistentRead=True)
        return list(page["Items"])


if pytest is not None:

    @pytest.fixture(scope="session")
    def dynamodb_local() -> Iterator[DynamoDBLocal]:
        """The session's DynamoDB Local: started once, stopped when the session ends."""
        local = require()
        yield local
        local.stop()

    @pytest.fixture
    def dynamodb_connections(
        dynamodb_local: DynamoDBLocal, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[Connections]:
        """Define connections to DynamoDB Local on this test's own tables (deleted after)."""
        import uuid

        connections = Connections(dynamodb_local, f"t_{uuid.uuid4().hex[:8]}_", monkeypatch)
        yield connections
        dynamodb_local.delete_tables(connections.prefix)


if __name__ == "__main__":
    if sys.argv[1:] != ["--fetch"]:
        sys.exit("usage: python tests/dynamodb_local.py --fetch")
    print(f"DynamoDB Local: {fetch() / 'DynamoDBLocal.jar'}")
