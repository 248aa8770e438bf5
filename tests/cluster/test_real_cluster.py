"""The model lifecycle against a real Kubernetes cluster: runs when KUBECONFIG is set, skips otherwise.

deploy -> update (keeping a toleration ops added) -> a failed update rolled back -> undeploy, and an
autoscaled model moved to a fixed replica count, each in a throw-away namespace (deleted at the end) that
gets the S3 Secret the model pods read, with the watcher acting as the kit's ServiceAccount under the
shipped `cronjob/role.yaml` (a token from the TokenRequest API), not as the kubeconfig's admin.
For the rollouts to become ready the cluster must
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
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a real cluster (set KUBECONFIG)")]
SECRET = "service-builder-s3"
KIT = Path(__file__).resolve().parents[2] / "cronjob"
TOLERATION = {"key": "e2e.service-builder.io/test", "operator": "Exists", "effect": "NoSchedule"}
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


def role_token(namespace: str) -> str:
    """The kit's ServiceAccount, Role and RoleBinding in `namespace`, and a short-lived token of that account."""
    import yaml
    from kubernetes import client

    rbac, core = client.RbacAuthorizationV1Api(), client.CoreV1Api()
    for name in ("serviceaccount.yaml", "role.yaml", "rolebinding.yaml"):
        doc = yaml.safe_load((KIT / name).read_text())
        if doc["kind"] == "ServiceAccount":
            core.create_namespaced_service_account(namespace, doc)
        elif doc["kind"] == "Role":
            rbac.create_namespaced_role(namespace, doc)
        else:
            doc["subjects"][0]["namespace"] = namespace  # kustomize fills it in an install
            rbac.create_namespaced_role_binding(namespace, doc)
    request = core.create_namespaced_service_account_token(
        "service-builder", namespace, {"spec": {"expirationSeconds": 3600}})
    return str(request.status.token)


def as_the_role(namespace: str, **values: Any) -> Any:
    """Watcher settings that reach the cluster as the kit's ServiceAccount (K8S_API + K8S_API_KEY)."""
    from kubernetes import client

    from watcher.config.settings import load_settings

    host = client.Configuration.get_default_copy().host
    return load_settings(k8s_api=host, k8s_api_key=role_token(namespace), k8s_verify_ssl=False,
                         k8s_name_space=namespace, **values)


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
    from kubernetes import client
    from mlflow import MlflowClient

    from devstack.models import log_iris, register_versions
    from model_wrapper.contract.naming import model_slug
    from watcher.entry.cli import build_deps
    from watcher.reconcile.engine import reconcile_once

    tag = {"deploy": f"e2e-{cluster_namespace}"}
    image = os.environ.get("E2E_MODEL_WRAPPER_IMAGE")
    settings = as_the_role(
        cluster_namespace,
        mlflow_tracking_uri=registry, mlflow_s3_endpoint_url=e2e("MLFLOW_S3_ENDPOINT_URL"),
        aws_access_key_id=e2e("AWS_ACCESS_KEY_ID"), aws_secret_access_key=e2e("AWS_SECRET_ACCESS_KEY"),
        selector=f"tag:deploy={tag['deploy']}", smoke_test="off",
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
    apps = client.AppsV1Api()  # ops, as the kubeconfig's admin, let the model onto tainted nodes
    slug = model_slug(model_name)
    apps.patch_namespaced_deployment(slug, cluster_namespace, [
        {"op": "add", "path": "/spec/template/spec/tolerations", "value": [TOLERATION]}])

    register_versions(model_name, logged, tags=tag, client=MlflowClient(registry))  # v2: an update
    updated = run()
    assert (updated.updated, updated.failed) == (1, 0), updated.failures
    assert status("2")["deployment_status"] == "deployed" and status("1")["deployment_status"] == "superseded"
    template = apps.read_namespaced_deployment(slug, cluster_namespace).spec.template.spec
    assert [t.key for t in template.tolerations or []] == [TOLERATION["key"]], "the update kept what ops added"

    register_versions(model_name, logged, tags=tag, client=MlflowClient(registry))  # v3, broken image
    broken = run(model_wrapper_image=BROKEN_IMAGE)  # rolled back under the shipped Role (get on every kind)
    assert broken.failed == 1
    assert status("3")["deployment_status"] == "failed" and f"image {BROKEN_IMAGE} cannot be pulled" in status("3")[
        "deployment_message"]
    assert status("2")["deployment_status"] == "deployed"
    (live,) = build_deps(settings).target.observe().live()
    assert live.version == 2

    for version in ("1", "2", "3"):
        MlflowClient(registry).delete_model_version_tag(model_name, version, "deploy")
    assert run().undeployed == 1
    assert build_deps(settings).target.observe().live() == []


def test_an_autoscaled_model_moved_to_a_fixed_count_above_the_hpas_maximum_keeps_it(
    registry: str, cluster_namespace: str, model_name: str
) -> None:
    """The real HPA controller rescales a count above maxReplicas while the HPA exists (horizontal.go)."""
    import time

    from kubernetes import client

    from devstack.models import IRIS_CONTRACT, log_iris
    from model_wrapper.contract.naming import model_slug
    from watcher.entry.cli import build_deps
    from watcher.reconcile.engine import reconcile_once

    image = os.environ.get("E2E_MODEL_WRAPPER_IMAGE")
    if not image:
        pytest.skip("needs E2E_MODEL_WRAPPER_IMAGE: the replicas must become ready")
    tag = {"deploy": f"e2e-{cluster_namespace}"}
    settings = as_the_role(
        cluster_namespace, mlflow_tracking_uri=registry, mlflow_s3_endpoint_url=e2e("MLFLOW_S3_ENDPOINT_URL"),
        aws_access_key_id=e2e("AWS_ACCESS_KEY_ID"), aws_secret_access_key=e2e("AWS_SECRET_ACCESS_KEY"),
        selector=f"tag:deploy={tag['deploy']}", smoke_test="off", s3_secret_name=SECRET,
        model_wrapper_image=image, rollout_timeout_seconds=float(os.environ.get("E2E_ROLLOUT_TIMEOUT", "180")))

    def run() -> Any:
        return reconcile_once(build_deps(settings, clock=lambda: datetime.now(UTC)))

    scaled = IRIS_CONTRACT + "serving:\n  autoscaling: {min_replicas: 1, max_replicas: 2, target_cpu_utilization: 80}\n"
    log_iris(model_name, tags=tag, contract=scaled)
    assert run().deployed == 1
    log_iris(model_name, tags=tag, contract=IRIS_CONTRACT + "serving:\n  replicas: 3\n")
    moved = run()
    assert (moved.updated, moved.failed) == (1, 0), moved.failures

    time.sleep(45)  # three HPA controller syncs (15 s each), had the HPA survived
    slug, apps = model_slug(model_name), client.AppsV1Api()
    assert apps.read_namespaced_deployment(slug, cluster_namespace).spec.replicas == 3
    hpas = client.AutoscalingV2Api().list_namespaced_horizontal_pod_autoscaler(cluster_namespace).items
    assert hpas == []
