"""Real local peers for the demo and the tests: moto's S3 server and an `mlflow server`.

Each starts on a free loopback port and stops cleanly; nothing is left running.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

# Throw-away credentials for the local S3; never used anywhere else.
LOCAL_AWS_ENV = {"AWS_ACCESS_KEY_ID": "devstack-key", "AWS_SECRET_ACCESS_KEY": "devstack-secret",
                 "AWS_DEFAULT_REGION": "us-east-1"}
KEEP_ALIVE_SECONDS = 3600  # longer than a test session: no idle connection is closed under a client
QUIET_MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "DO_NOT_TRACK": "true"}

# What a registry needs to deliver webhooks to a receiver on loopback over http.
WEBHOOK_SERVER_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    # The server caches each event's webhook list this long (default 60 s); a new registration waits for it.
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    "MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_WEBHOOK_REQUEST_TIMEOUT": "5",
    # Webhook secrets are stored encrypted; a fixed key keeps them readable across a server restart.
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"service-builder-devstack-fernet!").decode(),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `process` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@dataclass
class LocalS3:
    """moto's S3 server on loopback, in this process. State survives stop()/start()."""

    bucket: str = "models"
    port: int = field(default_factory=free_port)
    _server: ThreadedMotoServer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalS3:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                              aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if self.bucket not in existing:
            client.create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass
class LocalMlflow:
    """A real `mlflow server` (sqlite backend, S3 artifact root) in a child process."""

    s3: LocalS3
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="devstack-mlflow-")))
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """The environment a client (watcher, wrapper) needs to use this registry and its S3."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint_url,
                **LOCAL_AWS_ENV, **QUIET_MLFLOW_ENV}

    def start(self, timeout: float = 90) -> LocalMlflow:
        env = {**os.environ, **self.client_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               **self.extra_env}
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1", "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
                   "--default-artifact-root", f"s3://{self.s3.bucket}/mlflow",
                   # uvicorn closes a connection idle for 5 s; a client that reuses it at that moment gets
                   # a reset, which clients without retries (the tests) report as an unreachable registry.
                   "--uvicorn-opts", f"--timeout-keep-alive {KEEP_ALIVE_SECONDS}"]
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        try:
            wait_http(f"{self.tracking_uri}/health", timeout, self.process)
        except Exception:
            self.stop()
            raise RuntimeError(f"mlflow server did not start; see {self.workdir / 'server.log'}") from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
