"""Fixtures for watcher tests: a pass wired to the real MLflow server, moto S3 and kmock."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.models import LoggedModel, log_iris
from devstack.servers import LocalMlflow
from tests.peers import KubernetesPeer, all_ready, pass_settings
from watcher.config.settings import Settings
from watcher.entry.cli import build_deps
from watcher.reconcile.deps import Deps

FIXED_NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def iris(mlflow_server: LocalMlflow) -> LoggedModel:
    """One iris model with a contract, logged once: tests register versions of it under their own names.

    Registering a version takes milliseconds where logging a model takes seconds.
    """
    return log_iris("iris-files-for-reconcile-tests")


@pytest.fixture
def upload(mlflow_server: LocalMlflow) -> Callable[[dict[str, str]], str]:
    """Put files in S3 under a fresh prefix and return its URI, for a version whose source is exactly that."""
    s3 = boto3.client("s3", endpoint_url=mlflow_server.s3.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="devstack-key", aws_secret_access_key="devstack-secret")

    def put(files: dict[str, str]) -> str:
        prefix = f"handmade/{uuid.uuid4().hex}"
        for name, text in files.items():
            s3.put_object(Bucket=mlflow_server.s3.bucket, Key=f"{prefix}/{name}", Body=text.encode())
        return f"s3://{mlflow_server.s3.bucket}/{prefix}"

    return put


@pytest.fixture
def make_settings(mlflow_server: LocalMlflow, kube: KubernetesPeer, namespace: str, production: dict[str, str],
                  tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a pass against the session's peers, in this test's own namespace."""

    def make(**overrides: Any) -> Settings:
        return pass_settings(mlflow_server.tracking_uri, mlflow_server.s3.endpoint_url, kube, namespace,
                             production, tmp_path / "state", **{"smoke_test": "auto", **overrides})

    return make


@pytest.fixture
def make_deps(make_settings: Callable[..., Settings]) -> Callable[..., Deps]:
    def make(settings: Settings | None = None, **overrides: Any) -> Deps:
        return build_deps(settings or make_settings(), clock=lambda: FIXED_NOW, **overrides)

    return make


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, mlflow_server: LocalMlflow, kube: KubernetesPeer, namespace: str,
        production: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The environment ops give the CronJob, pointed at this test's peers and namespace."""
    values = {
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri, "MLFLOW_S3_ENDPOINT_URL": mlflow_server.s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": "devstack-key", "AWS_SECRET_ACCESS_KEY": "devstack-secret", "K8S_API": kube.url,
        "K8S_NAME_SPACE": namespace, "SERVICE_BUILDER_HOST_NAME": "models.example.org",
        "MODEL_WRAPPER_IMAGE": "registry.example.org/model-wrapper:1.0",
        "SELECTOR": f"tag:deploy={production['deploy']}",
        "ROLLOUT_TIMEOUT_SECONDS": "5", "LOCAL_STATE_DIR": str(tmp_path / "state"), "LOG_FORMAT": "text",
        "LOCAL_FRONT_PORT": "0",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DEPLOY_TARGET", raising=False)
    return values


@pytest.fixture(autouse=True)
def _controller_resets(kube: KubernetesPeer) -> Iterator[None]:
    kube.set_rollout_policy(all_ready)
    yield
    kube.set_rollout_policy(all_ready)
