"""Helpers shared by the fault tests: read tags, play the Deployment controller, run the watcher as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from devstack.servers import LocalS3
from tests.peers import KubernetesPeer, all_ready
from watcher.config.settings import Settings
from watcher.decide.rollout import rollout_status

ROOT = Path(__file__).resolve().parents[2]
WATCHER_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "K8S_API", "K8S_API_KEY", "K8S_NAME_SPACE", "SERVICE_BUILDER_HOST_NAME", "MODEL_WRAPPER_IMAGE",
               "SELECTOR", "ROLLOUT_TIMEOUT_SECONDS", "SMOKE_TEST", "LOCAL_STATE_DIR", "WEBHOOK_SECRET",
               "LOG_FORMAT")
# The MLflow client retries the CLI configures for itself (bounded, with back-off) apply in these runs.
_TEST_ONLY = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")
PLURALS = ("networkpolicies", "deployments", "services", "ingresses")


def tags(name: str, version: str | int = 1) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, str(version)).tags)


def ready_now(kube: KubernetesPeer, namespace: str, name: str) -> None:
    """The cluster catches up: from now on pods start and become Ready, and the controller finishes the
    Deployment's rollout (without the watcher's help)."""
    kube.set_rollout_policy(all_ready)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        deployment = kube.objects("deployments", namespace).get(name)
        if deployment is not None and rollout_status(deployment).done:
            return
        time.sleep(0.05)
    raise AssertionError(f"the controller never rolled out {name}")


def watcher_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment `python -m watcher` needs to run with `settings` (as the CronJob would get it)."""
    values: Mapping[str, Any] = settings.model_dump()
    env = {key: value for key, value in os.environ.items() if key not in WATCHER_ENV + _TEST_ONLY}
    for key in WATCHER_ENV:
        value = values.get(key.lower())
        if value is not None:
            env[key] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def start_watcher(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "watcher", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_watcher(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def managed_objects(kube: KubernetesPeer, namespace: str) -> dict[str, set[str]]:
    """Names of the Deployments, Services and Ingresses in `namespace`, by plural."""
    return {plural: set(kube.objects(plural, namespace)) for plural in PLURALS}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line or line.startswith("ERROR")]


@contextmanager
def credentials_checked(s3: LocalS3) -> Iterator[None]:
    """Switch on moto's IAM check (off by default), so that unknown credentials are refused."""

    def set_free_requests(count: str) -> None:
        request = urllib.request.Request(f"{s3.endpoint_url}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            json.loads(response.read())

    set_free_requests("0")
    try:
        yield
    finally:
        set_free_requests("inf")
