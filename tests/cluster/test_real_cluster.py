"""The pass against a real Kubernetes cluster: runs when KUBECONFIG is set, skips otherwise.

Everything happens in a throw-away namespace that is deleted at the end. The wrapper image must
be pullable by the cluster and reach the MLflow/S3 endpoints for the rollout to become ready
(E2E_MODEL_WRAPPER_IMAGE, E2E_MLFLOW_TRACKING_URI, E2E_S3_ENDPOINT_URL); without them the suite
still proves that the real API server accepts the manifests, the patches and the Lease.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a real cluster (set KUBECONFIG)")]


@pytest.fixture
def cluster_namespace() -> Iterator[str]:
    from kubernetes import client, config

    config.load_kube_config()
    name = f"sb-e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api()
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def test_real_api_server_accepts_apply_update_and_undeploy(
    mlflow_server: object, cluster_namespace: str, model_name: str
) -> None:
    from mlflow import MlflowClient

    from devstack.models import log_iris
    from watcher.cli import build_deps
    from watcher.reconcile import reconcile_once
    from watcher.settings import load_settings

    tag = {"deploy": f"e2e-{cluster_namespace}"}
    logged = log_iris(model_name, tags=tag)
    settings = load_settings(
        mlflow_tracking_uri=os.environ.get("E2E_MLFLOW_TRACKING_URI") or os.environ["MLFLOW_TRACKING_URI"],
        k8s_name_space=cluster_namespace, selector=f"tag:deploy={tag['deploy']}", smoke_test="off",
        model_wrapper_image=os.environ.get("E2E_MODEL_WRAPPER_IMAGE", "service-builder/model-wrapper:0.1.0"),
        rollout_timeout_seconds=float(os.environ.get("E2E_ROLLOUT_TIMEOUT", "20")))
    deps = build_deps(settings, clock=lambda: datetime.now(UTC))
    report = reconcile_once(deps)
    tags = MlflowClient().get_model_version(model_name, logged.version).tags
    if os.environ.get("E2E_MODEL_WRAPPER_IMAGE"):
        assert report.deployed == 1, report.failures
        assert tags["deployment_status"] == "deployed"
    else:  # the image cannot start here: the rollout must fail cleanly and leave nothing behind
        assert report.failed == 1 and tags["deployment_status"] == "failed"
        assert "not ready" in tags["deployment_message"]
        assert deps.target.observe().live() == []
    MlflowClient().delete_model_version_tag(model_name, logged.version, "deploy")
    reconcile_once(deps)
    assert deps.target.observe().live() == []
