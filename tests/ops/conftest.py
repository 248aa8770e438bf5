"""Fixtures for the long-running watcher: an MLflow server that delivers webhooks, settings and deps on kmock.

Adapted from tests/reconcile/conftest.py. Nothing here is autouse: the manifest tests in this
folder need no server.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from devstack.models import LoggedModel, log_iris
from devstack.servers import WEBHOOK_SERVER_ENV, LocalMlflow, LocalS3, free_port
from tests.peers import KubernetesPeer, all_ready, pass_settings
from watcher.config.settings import Settings
from watcher.entry.cli import build_deps
from watcher.entry.webhooks import WEBHOOK_NAME

FIXED_NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
WEBHOOK_SECRET = "whsec-for-tests-only-4f1c9a"


@pytest.fixture(scope="session")
def webhook_mlflow(s3: LocalS3) -> Iterator[LocalMlflow]:
    """A second real `mlflow server`, started with the settings a cluster-internal receiver needs."""
    server = LocalMlflow(s3, extra_env=WEBHOOK_SERVER_ENV).start()
    # S3 endpoint and keys for clients, for the session (as the default registry's fixture does);
    # which registry a test talks to is chosen per test by `registry`.
    os.environ.update({k: v for k, v in server.client_env().items() if k != "MLFLOW_TRACKING_URI"})
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def iris_files(webhook_mlflow: LocalMlflow) -> LoggedModel:
    """One iris model with a contract, logged once; tests register versions of it under their own names."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(webhook_mlflow.tracking_uri)
    try:
        return log_iris("iris-files-for-ops-tests")
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture
def registry(webhook_mlflow: LocalMlflow, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalMlflow]:
    """The webhook-enabled server is this test's registry (for `log_iris` and `MlflowClient()` too)."""
    if webhook_mlflow.process is None:  # a test that stopped it failed before starting it again
        webhook_mlflow.start()
    for key, value in webhook_mlflow.client_env().items():
        monkeypatch.setenv(key, value)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(webhook_mlflow.tracking_uri)
    yield webhook_mlflow
    for hook in MlflowClient().list_webhooks():
        if hook.name == WEBHOOK_NAME:
            MlflowClient().delete_webhook(hook.webhook_id)
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def make_settings(registry: LocalMlflow, kube: KubernetesPeer, namespace: str, production: dict[str, str],
                  tmp_path: Path) -> Callable[..., Settings]:
    """Settings for the loop and the receiver against the session's peers, on loopback, in this test's namespace."""

    def make(**overrides: Any) -> Settings:
        loop_values = {"listen_address": "127.0.0.1", "webhook_port": free_port(), "webhook_secret": WEBHOOK_SECRET,
                       "poll_interval_seconds": 3600, "backoff_max_seconds": 1}
        return pass_settings(registry.tracking_uri, registry.s3.endpoint_url, kube, namespace, production,
                             tmp_path / "state", **{**loop_values, **overrides})

    return make


@pytest.fixture
def deps_factory() -> Callable[..., Any]:
    """`build_deps` with the test clock: what `run_watch` and `serve` are handed."""
    return functools.partial(build_deps, clock=lambda: FIXED_NOW)


@pytest.fixture
def controller(kube: KubernetesPeer) -> Iterator[KubernetesPeer]:
    """kmock whose rollout policy a test may change; every Deployment is ready again afterwards."""
    kube.set_rollout_policy(all_ready)
    yield kube
    kube.set_rollout_policy(all_ready)


@pytest.fixture
def process_env(registry: LocalMlflow, kube: KubernetesPeer, namespace: str, production: dict[str, str]
                ) -> dict[str, str]:
    """The environment of a `python -m watcher ...` child process against the same peers."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
    env.update(registry.client_env())
    env.update({"K8S_API": kube.url, "K8S_NAME_SPACE": namespace, "SELECTOR": f"tag:deploy={production['deploy']}",
                "SERVICE_BUILDER_HOST_NAME": "models.example.org", "LISTEN_ADDRESS": "127.0.0.1",
                "MODEL_WRAPPER_IMAGE": "registry.example.org/model-wrapper:1.0", "WEBHOOK_SECRET": WEBHOOK_SECRET,
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Let a test call configure_logging(); the root logger is put back as it was afterwards.

    kmock's access log is muted meanwhile: its thread logs after each response, and a late line
    would go to this test's captured stderr after pytest closed it.
    """
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    handlers, level, access_level = root.handlers[:], root.level, access.level
    access.setLevel(logging.WARNING)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    access.setLevel(access_level)
