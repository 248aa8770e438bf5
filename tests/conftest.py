"""Session-wide real peers: moto's S3 server, a real `mlflow server`, kmock's Kubernetes API.

Each starts once per session on a free port. Tests isolate themselves with unique model
names and a fresh Kubernetes namespace rather than by restarting servers.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

from devstack.servers import LocalMlflow, LocalS3  # noqa: E402
from tests.peers import KubernetesPeer  # noqa: E402

ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    server = LocalS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(s3: LocalS3) -> Iterator[LocalMlflow]:
    """A real MLflow tracking server; its client environment is exported for the whole session."""
    server = LocalMlflow(s3).start()
    os.environ.update(server.client_env())
    import mlflow

    mlflow.set_tracking_uri(server.tracking_uri)
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def kube() -> Iterator[KubernetesPeer]:
    peer = KubernetesPeer().start()
    yield peer
    peer.stop()


@pytest.fixture
def namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def production(namespace: str) -> dict[str, str]:
    """The tags that select a version in this test only (the registry is shared by the session).

    The literal `deploy=production` is left to tests that check the default selector itself.
    """
    return {"deploy": f"production-{namespace}"}


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    """A registered-model name unique to this test."""
    return f"{re.sub(r'[^A-Za-z0-9]+', '-', request.node.name)[:40]}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep what a person may want to look at (screenshots); not committed."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs a command in-process (`watcher.entry.cli.main`) configures logging: the root
    logger's handler then writes to that test's captured stderr, which pytest closes after it. The root
    handlers are put back after every test, so a later test's log line (kmock's access log, from its
    own thread) never goes to a closed stream ("--- Logging error ---" in the suite's output)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
