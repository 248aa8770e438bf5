"""The model lifecycle against a real Kubernetes cluster: runs when KUBECONFIG is set, skips otherwise.

deploy -> update -> a failed update rolled back -> undeploy, in a throw-away namespace (deleted at the
end) that gets the S3 Secret the model pods read. For the rollouts to become ready the cluster must
run the wrapper image and its pods must reach MLflow and S3, so the registry and the object store are
the ones named by the E2E_* variables, used both to log the model and by the watcher (README, "Against
a real cluster"). Without E2E_MODEL_WRAPPER_IMAGE the suite still proves that the real API server
accepts the manifests, patches and the Lease, and that a version whose pods cannot start is failed
and leaves nothing behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a real cluster (set KUBECONFIG)")]
SECRET = "service-builder-s3"
BROKEN_IMAGE = "registry.invalid/service-builder/model-wrapper:does-not-exist"


def e2e(name: str, default: str | None = None) -> str | None:
    """E2E_<name>, else what the session's own peers use."""
    return os.environ.get(f"E2E_{name}") or os.environ.get(name) or default


@pytest.fixture
def cluster_namespace() -> Iterator[str]:
    from kubernetes import client, config

    config.load_kube_config()
    name = f"sb-e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api()
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_secret(name, {"metadata": {"name": SECRET}, "type": "Opaque", "stringData": {
        "AWS_ACCESS_KEY_ID": e2e("AWS_ACCESS_KEY_ID", ""), "AWS_SECRET_ACCESS_KEY": e2e("AWS_SECRET_ACCESS_KEY", "")}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def registry(mlflow_server: Any) -> Iterator[str]:
    """The MLflow both the test and the watcher use: E2E_MLFLOW_TRACKING_URI when the pods must reach it."""
    import mlflow

    uri = e2e("MLFLOW_TRACKING_URI")
    assert uri
    previous = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL",
                                                     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    for key in previous:  # the model's files go where the pods will read them
        if value := e2e(key):
            os.environ[key] = value
    mlflow.set_tracking_uri(uri)
    yield uri
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    mlflow.set_tracking_uri(previous["MLFLOW_TRACKING_URI"])


def test_deploy_update_failed_update_rolled_back_and_undeploy(
    registry: str, cluster_namespace: str, model_name: str
) -> None:
    from mlflow import MlflowClient

    from devstack.models import log_iris, register_versions
    from watcher.config.settings import load_settings
    from watcher.entry.cli import build_deps
    from watcher.reconcile.engine import reconcile_once

    tag = {"deploy": f"e2e-{cluster_namespace}"}
    image = os.environ.get("E2E_MODEL_WRAPPER_IMAGE")
    settings = load_settings(
        mlflow_tracking_uri=registry, mlflow_s3_endpoint_url=e2e("MLFLOW_S3_ENDPOINT_URL"),
        aws_access_key_id=e2e("AWS_ACCESS_KEY_ID"), aws_secret_access_key=e2e("AWS_SECRET_ACCESS_KEY"),
        k8s_name_space=cluster_namespace, selector=f"tag:deploy={tag['deploy']}", smoke_test="off",
        s3_secret_name=SECRET, model_wrapper_image=image or BROKEN_IMAGE,
        rollout_timeout_seconds=float(os.environ.get("E2E_ROLLOUT_TIMEOUT", "180")))

    def run(**overrides: Any) -> Any:
        return reconcile_once(build_deps(settings.model_copy(update=overrides), clock=lambda: datetime.now(UTC)))

    def status(version: str) -> dict[str, str]:
        return dict(MlflowClient(registry).get_model_version(model_name, version).tags)

    logged = log_iris(model_name, tags=tag)
    first = run()
    if not image:  # the image cannot start here: the rollout fails cleanly and leaves nothing behind
        assert first.failed == 1 and status(logged.version)["deployment_status"] == "failed"
        assert build_deps(settings).target.observe().live() == []
        return
    assert first.deployed == 1, first.failures
    assert status(logged.version)["deployment_status"] == "deployed"

    register_versions(model_name, logged, tags=tag, client=MlflowClient(registry))  # v2: an update
    updated = run()
    assert (updated.updated, updated.failed) == (1, 0), updated.failures
    assert status("2")["deployment_status"] == "deployed" and status("1")["deployment_status"] == "superseded"

    register_versions(model_name, logged, tags=tag, client=MlflowClient(registry))  # v3, broken image
    broken = run(model_wrapper_image=BROKEN_IMAGE)
    assert broken.failed == 1
    assert status("3")["deployment_status"] == "failed" and "version 2 keeps serving" in status("3")[
        "deployment_message"]
    assert status("2")["deployment_status"] == "deployed"
    (live,) = build_deps(settings).target.observe().live()
    assert live.version == 2

    for version in ("1", "2", "3"):
        MlflowClient(registry).delete_model_version_tag(model_name, version, "deploy")
    assert run().undeployed == 1
    assert build_deps(settings).target.observe().live() == []
