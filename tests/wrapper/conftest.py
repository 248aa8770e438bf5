"""Wrapper fixtures: models logged to the session's real MLflow server and S3, and real
`python -m model_wrapper` processes serving them on free loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow, free_port, stop_process
from tests.wrapper.models import log_iris_model

ROOT = Path(__file__).resolve().parents[2]
# The entry point the image's CMD runs (tests/wrapper/test_dockerfile.py checks they agree).
ENTRY_POINT = ["python", "-m", "model_wrapper"]
START_TIMEOUT = 120


class WORKDIRS:
    """Where wrapper processes keep their log and termination log (pytest's tmp, set per session)."""

    root: str | None = None


@pytest.fixture(scope="session", autouse=True)
def _wrapper_workdirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    WORKDIRS.root = str(tmp_path_factory.mktemp("wrappers"))


@dataclass
class WrapperProcess:
    """One `python -m model_wrapper` child process."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    python: str = sys.executable
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wrapper-", dir=WORKDIRS.root)))
    process: subprocess.Popen[bytes] | None = None

    @property
    def termination_log(self) -> Path:
        return self.workdir / "termination-log"

    @property
    def log_path(self) -> Path:
        return self.workdir / "wrapper.log"

    def base(self, slug: str) -> str:
        return f"http://127.0.0.1:{self.port}/{slug}/api/"

    def start(self) -> WrapperProcess:
        # No drain unless a test asks for one: with the default (10 s) every stop below would wait it out.
        env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "DRAIN_SECONDS": "0",
               "TERMINATION_LOG": str(self.termination_log), **self.env}
        command = [self.python, *ENTRY_POINT[1:]]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def wait_until(self, url: str, timeout: float = START_TIMEOUT) -> None:
        """Poll `url` until it answers 200; fail with the log if the process dies first."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"wrapper exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"{url} not 200 within {timeout}s:\n{self.log()}")

    def exit_code(self, timeout: float = START_TIMEOUT) -> int:
        """Wait for the process to exit by itself (stopping it if it does not) and return its code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        finally:
            self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass(frozen=True)
class Served:
    """A running wrapper and the model it serves."""

    model: LoggedModel
    wrapper: WrapperProcess
    slug: str
    client: httpx.Client

    @property
    def base(self) -> str:
        return self.wrapper.base(self.slug)

    def post(self, path: str, body: Any = None, *, content: bytes | None = None, **kwargs: Any) -> httpx.Response:
        if content is not None:
            return self.client.post(self.base + path, content=content, **kwargs)
        return self.client.post(self.base + path, json=body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(self.base + path, **kwargs)


def model_env(model: LoggedModel, mlflow_server: LocalMlflow, **extra: str) -> dict[str, str]:
    return {**mlflow_server.client_env(), "MODEL_NAME": model.name, "MODEL_VERSION": model.version,
            "MODEL_SOURCE": model.source, "MODEL_RUN_ID": model.run_id, **extra}


def serve(model: LoggedModel, mlflow_server: LocalMlflow, **extra: str) -> Iterator[Served]:
    """Start a wrapper for `model`, wait for ready, yield it, stop it."""
    from model_wrapper.contract.naming import model_slug

    wrapper = WrapperProcess(model_env(model, mlflow_server, **extra)).start()
    slug = extra.get("MODEL_SLUG") or model_slug(model.name)
    try:
        wrapper.wait_until(wrapper.base(slug) + "ready")
        with httpx.Client(timeout=30) as client:
            yield Served(model, wrapper, slug, client)
    finally:
        wrapper.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def iris_model(mlflow_server: LocalMlflow) -> LoggedModel:
    return log_iris_model(unique("wrapper-iris"))


@pytest.fixture(scope="session")
def iris(iris_model: LoggedModel, mlflow_server: LocalMlflow) -> Iterator[Served]:
    """The iris classifier (contract with labels), served once for the session."""
    yield from serve(iris_model, mlflow_server, MAX_BATCH="50", MAX_BODY_BYTES="65536")


@pytest.fixture(scope="session")
def pyfunc_iris(iris_model: LoggedModel, mlflow_server: LocalMlflow) -> Any:
    """The same model as MLflow's pyfunc loads it, in this process: the reference answers."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(iris_model.source)


@pytest.fixture(scope="session")
def peers(mlflow_server: LocalMlflow, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The Open Inference Protocol suite's models, each served by a wrapper and all by one MLServer
    (tests/wrapper/oip_servers.py), shared by its modules."""
    from tests.wrapper.oip_servers import start_peers

    started = start_peers(mlflow_server, tmp_path_factory.mktemp("oip"))
    yield started
    started.stop()
