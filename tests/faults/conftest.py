"""Fixtures for the fault and hostile-input matrix: the reconcile fixtures, plus ways to break the peers.

The session's peers are shared: a test that stops MLflow or S3 restarts it in a `finally`, and
Kubernetes faults are kmock reactions scoped to the test's own namespace, removed afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from mlflow import MlflowClient

from devstack.servers import LOCAL_AWS_ENV, LocalMlflow, LocalS3
from tests.faults.kube_faults import KubeFaults
from tests.peers import KubernetesPeer
from tests.reconcile.conftest import _controller_resets, make_deps, make_settings, upload  # noqa: F401


@pytest.fixture(autouse=True)
def _skip_requirements_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Log models in ~1 s instead of ~6 s: MLflow then records default requirements (it warns).

    The watcher never reads a model's requirements, so nothing these tests check depends on them.
    """
    monkeypatch.setenv("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "0")


@pytest.fixture
def kube_faults(kube: KubernetesPeer, namespace: str) -> Iterator[KubeFaults]:
    faults = KubeFaults(kube, namespace)
    with faults.installed():
        yield faults


@pytest.fixture
def s3_client(s3: LocalS3) -> Any:
    return boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def model_files(mlflow_server: LocalMlflow) -> Callable[[str, str], tuple[str, str]]:
    """(bucket, key prefix) of a registered version's model files in S3."""

    def where(name: str, version: str) -> tuple[str, str]:
        uri = MlflowClient().get_model_version_download_uri(name, version)
        assert uri.startswith("s3://"), uri
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return bucket, prefix.rstrip("/")

    return where
