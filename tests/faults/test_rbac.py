"""The shipped Role against the calls the watcher really makes, under the test control plane's RBAC.

The control plane (tests/rbac.py) authorises each request of the watcher's identity against
`cronjob/role.yaml` as the API server's RBAC authorizer does: a call the Role lacks is a 403 in every
test of the suite. Here one namespace sees every path that needs a grant, and the grants that
authorised its requests must be the Role's, all of them: nothing granted goes unused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT
from model_wrapper.contract.naming import model_slug
from tests.evaluation.conftest import GATE, csv_bytes, iris_table
from tests.faults.kube_faults import KubeFaults
from tests.faults.support import tags
from tests.peers import READY, KubernetesPeer, crash
from tests.rbac import Grant, shipped_grants
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.targets.kubernetes.cluster import api_client

MLMODEL = "flavors:\n  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.7}\n"
AUTOSCALED = IRIS_CONTRACT + ("serving:\n"
                              "  autoscaling: {min_replicas: 2, max_replicas: 4, target_cpu_utilization: 70}\n")
SHADOWED = AUTOSCALED + "rollout:\n  strategy: shadow\n"
VERSION = "service-builder.io/model-version"


@pytest.fixture
def register(model_name: str, upload: Callable[[dict[str, str]], str],
             production: dict[str, str]) -> Callable[[str], str]:
    client = MlflowClient()
    client.create_registered_model(model_name)

    def version(contract: str) -> str:
        files = {"MLmodel": MLMODEL, "contract.yaml": contract, "evaluation.csv": csv_bytes(iris_table()).decode()}
        return str(client.create_model_version(model_name, upload(files), tags=production).version)

    return version


def pods(template: dict[str, Any]) -> Any:
    """Version 2's pods crash; an evaluation Job's pod fails; the rest run."""
    meta = template.get("metadata") or {}
    if "job-name" in (meta.get("labels") or {}):
        return crash("evaluation: cannot read the model")
    return crash("boom") if (meta.get("annotations") or {}).get(VERSION) == "2" else READY


def used_grants(kube: KubernetesPeer, namespace: str) -> set[Grant]:
    emulator = kube.emulator
    assert emulator is not None
    return set(kube.call(lambda: set(emulator.rbac.used.get(namespace, set()))))


def test_the_role_grants_every_call_of_every_path_and_nothing_more(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer,
    kube_faults: KubeFaults, namespace: str, model_name: str, register: Callable[[str], str],
) -> None:
    deps = make_deps(make_settings(evaluation_timeout_seconds=60))
    kube.set_rollout_policy(pods)
    # A released Lease (holder cleared, as client-go's ReleaseOnCancel leaves it): the first pass takes it over.
    kube.create("apis/coordination.k8s.io/v1", namespace, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "service-builder"},
        "spec": {"holderIdentity": "", "leaseDurationSeconds": 60}})
    # The Service's create lands but its answer is lost: the retry's 409 adopts it.
    kube_faults.refuse("create", "services", 500, times=1, landed=True)
    register(AUTOSCALED)
    assert reconcile_once(deps).deployed == 1

    register(AUTOSCALED)  # v2 crash-loops: rolled back
    assert reconcile_once(deps).failed == 1 and tags(model_name, 2)["deployment_status"] == "failed"
    register(AUTOSCALED + GATE)  # v3's evaluation Job fails
    assert reconcile_once(deps).failed == 1 and "evaluation Job failed" in tags(model_name, 3)["deployment_message"]
    register(SHADOWED)  # v4 on trial beside v1: the live pods' mirroring ConfigMap is created
    assert reconcile_once(deps).failed == 0 and tags(model_name, 4)["rollout_status"] == "shadowing"
    register(SHADOWED)  # v5 replaces it: the ConfigMap there is read and patched to point at v5
    assert reconcile_once(deps).failed == 0 and tags(model_name, 5)["rollout_status"] == "shadowing"
    for version in ("1", "2", "3", "4", "5"):
        MlflowClient().delete_model_version_tag(model_name, version, "deploy")
    assert reconcile_once(deps).undeployed == 1
    assert kube.objects("deployments", namespace) == {} and model_slug(model_name)

    assert used_grants(kube, namespace) == shipped_grants()


def test_a_call_the_role_lacks_is_the_api_servers_403_status(
    make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
) -> None:
    core = client.CoreV1Api(api_client(make_settings()))
    with pytest.raises(ApiException) as refused:
        core.list_namespaced_secret(namespace)
    status = json.loads(refused.value.body)
    assert (refused.value.status, status["kind"], status["reason"], status["code"]) == (403, "Status", "Forbidden", 403)
    assert status["message"] == (
        f'secrets is forbidden: User "system:serviceaccount:{namespace}:service-builder" cannot list resource '
        f'"secrets" in API group "" in the namespace "{namespace}"')
    assert used_grants(kube, namespace) == set()
