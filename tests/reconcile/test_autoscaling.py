"""Autoscaling and disruption budgets per model, on the Kubernetes fixtures (kmock) and the real registry.

A contract's `serving.autoscaling` becomes an `autoscaling/v2` HorizontalPodAutoscaler that the
watcher creates, updates and removes with the model; 2 or more replicas add a PodDisruptionBudget
(`minAvailable: 1`, or `maxUnavailable: 1` where an HPA scales; unready pods always evictable). The
watcher leaves `spec.replicas` of an autoscaled Deployment to the HPA:
a scale alone causes no write, and a new template keeps the scaled count. The HPA controller's
write is played as a JSON patch of spec.replicas (kubernetes/kubernetes
pkg/controller/podautoscaler/horizontal.go updates the scale subresource, which writes exactly
that field); tests/control_plane.py's Deployment controller then rolls the pods out. The control
plane also runs the HPA's rescale rule (tests/hpa_controller.py): a count outside [min, max] is
rescaled to the bound, so a move to a fixed count holds only if the HPA is gone first. Bad
autoscaling sections end `failed` with a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT
from model_wrapper.contract.naming import model_slug
from tests.peers import READY, KubernetesPeer, crash
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps, PassReport
from watcher.reconcile.engine import reconcile_once
from watcher.render.manifests import MANAGED_BY, MANAGED_BY_LABEL, validate_manifest

MLMODEL = "flavors:\n  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.7}\n"
AUTOSCALED = IRIS_CONTRACT + ("serving:\n"
                              "  autoscaling: {min_replicas: 2, max_replicas: 10, target_cpu_utilization: 70}\n")
SCALING = ("horizontalpodautoscalers", "poddisruptionbudgets")


@pytest.fixture
def deps(make_deps: Callable[..., Deps]) -> Deps:
    return make_deps()


@pytest.fixture
def version_with(model_name: str, upload: Callable[[dict[str, str]], str],
                 production: dict[str, str]) -> Callable[[str], None]:
    """Register a new version of the test's model whose contract is `contract`, selected."""
    client = MlflowClient()

    def register(contract: str) -> None:
        if not client.search_registered_models(f"name = '{model_name}'"):
            client.create_registered_model(model_name)
        client.create_model_version(model_name, upload({"MLmodel": MLMODEL, "contract.yaml": contract}),
                                    tags=production)

    return register


def scaling_objects(kube: KubernetesPeer, namespace: str) -> dict[str, dict[str, Any]]:
    return {plural: kube.objects(plural, namespace) for plural in SCALING}


def writes(kube: KubernetesPeer, namespace: str) -> list[str]:
    return [f"{r.method.value} {r.resource.plural}" for r in kube.writes(namespace)
            if r.resource is not None and r.resource.plural != "leases"]


def scale_as_the_hpa_would(kube: KubernetesPeer, namespace: str, slug: str, replicas: int) -> None:
    """The HPA controller's write (through the scale subresource, a spec.replicas change); the Deployment
    controller then brings up the pods."""
    kube.patch("apis/apps/v1", namespace, "deployments", slug,
               [{"op": "replace", "path": "/spec/replicas", "value": replicas}])
    kube.wait_settled(namespace)


def test_autoscaling_renders_a_valid_hpa_and_a_budget_owned_like_the_other_objects(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, version_with: Callable[[str], None],
) -> None:
    version_with(AUTOSCALED)

    report = reconcile_once(deps)

    assert (report.deployed, report.failed) == (1, 0), report.failures
    slug = model_slug(model_name)
    hpa = kube.objects("horizontalpodautoscalers", namespace)[slug]
    pdb = kube.objects("poddisruptionbudgets", namespace)[slug]
    for obj in (hpa, pdb):  # what was sent passes the strict schema (the stored copy has server fields)
        validate_manifest({"apiVersion": obj["apiVersion"], "kind": obj["kind"], "spec": obj["spec"],
                           "metadata": {key: obj["metadata"][key] for key in ("name", "labels", "annotations")}})
        assert obj["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": slug}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    # One pod at a time, however many the HPA runs; unready pods never block a drain.
    assert (pdb["spec"]["maxUnavailable"], pdb["spec"]["unhealthyPodEvictionPolicy"]) == (1, "AlwaysAllow")
    assert "minAvailable" not in pdb["spec"]
    deployment = kube.objects("deployments", namespace)[slug]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["replicas"] == 2  # starts at the minimum; the HPA takes it from there


def test_the_watcher_never_fights_the_hpa_over_the_replica_count(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, version_with: Callable[[str], None],
) -> None:
    version_with(AUTOSCALED)
    reconcile_once(make_deps())
    slug = model_slug(model_name)
    scale_as_the_hpa_would(kube, namespace, slug, 7)
    before = len(writes(kube, namespace))

    steady = reconcile_once(make_deps())

    assert (steady.unchanged, steady.failed) == (1, 0), steady.failures
    assert writes(kube, namespace)[before:] == []

    new_image = reconcile_once(make_deps(make_settings(model_wrapper_image="registry.example.org/model-wrapper:2")))

    assert (new_image.updated, new_image.failed) == (1, 0), new_image.failures
    deployment = kube.objects("deployments", namespace)[slug]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.org/model-wrapper:2"
    assert deployment["spec"]["replicas"] == 7, "a new template keeps the count the autoscaler chose"


def test_a_version_without_autoscaling_removes_the_hpa_and_one_replica_removes_the_budget(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, version_with: Callable[[str], None],
) -> None:
    slug = model_slug(model_name)
    version_with(AUTOSCALED)
    reconcile_once(deps)
    version_with(IRIS_CONTRACT + "serving:\n  replicas: 3\n")

    update = reconcile_once(deps)

    assert (update.updated, update.failed) == (1, 0), update.failures
    assert set(kube.objects("horizontalpodautoscalers", namespace)) == set()
    assert set(kube.objects("poddisruptionbudgets", namespace)) == {slug}
    budget = kube.objects("poddisruptionbudgets", namespace)[slug]["spec"]
    assert (budget.get("minAvailable"), budget.get("maxUnavailable")) == (1, None), "what we stopped rendering goes"
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert kube.objects("deployments", namespace)[slug]["spec"]["replicas"] == 3, "the watcher owns the count again"

    version_with(IRIS_CONTRACT)  # one replica (the default): a budget would block every node drain
    assert reconcile_once(deps).updated == 1
    assert scaling_objects(kube, namespace) == {plural: {} for plural in SCALING}
    before = len(writes(kube, namespace))
    assert reconcile_once(deps).unchanged == 1 and writes(kube, namespace)[before:] == []


def test_undeploying_removes_the_hpa_and_the_budget_with_the_model(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, version_with: Callable[[str], None],
    production: dict[str, str],
) -> None:
    version_with(AUTOSCALED)
    reconcile_once(deps)
    (key, _), = production.items()
    MlflowClient().delete_model_version_tag(model_name, "1", key)

    report = reconcile_once(deps)

    assert report.undeployed == 1
    assert scaling_objects(kube, namespace) == {plural: {} for plural in SCALING}
    assert set(kube.objects("deployments", namespace)) == set()


def test_a_deleted_hpa_is_recreated(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, version_with: Callable[[str], None],
) -> None:
    version_with(AUTOSCALED)
    reconcile_once(deps)
    slug = model_slug(model_name)
    kube.delete("apis/autoscaling/v2", namespace, "horizontalpodautoscalers", slug)

    report = reconcile_once(deps)

    assert (report.updated, report.failed) == (1, 0), report.failures
    assert slug in kube.objects("horizontalpodautoscalers", namespace)


@pytest.mark.parametrize(("autoscaling", "message"), [
    ("{min_replicas: 5, max_replicas: 2, target_cpu_utilization: 70}", "min_replicas (5) is above max_replicas (2)"),
    ("{min_replicas: 1, max_replicas: 2, target_cpu_utilization: 0}", "serving.autoscaling.target_cpu_utilization"),
    ("{min_replicas: 1, max_replicas: 2, target_cpu_utilization: 150}", "serving.autoscaling.target_cpu_utilization"),
    ("{min_replicas: 1, max_replicas: 2}", "serving.autoscaling.target_cpu_utilization: Field required"),
], ids=["min above max", "target 0", "target 150", "no target"])
def test_a_bad_autoscaling_section_fails_the_version_with_a_message_and_creates_nothing(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, version_with: Callable[[str], None],
    autoscaling: str, message: str,
) -> None:
    version_with(IRIS_CONTRACT + f"serving:\n  autoscaling: {autoscaling}\n")

    report: PassReport = reconcile_once(deps)

    assert report.failed == 1
    version = MlflowClient().get_model_version(model_name, "1")
    assert version.tags["deployment_status"] == "failed"
    assert message in version.tags["deployment_message"]
    assert kube.objects("deployments", namespace) == {} and scaling_objects(kube, namespace) == {
        plural: {} for plural in SCALING}


def test_a_fixed_count_above_the_hpas_maximum_holds_once_the_hpa_is_gone(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, version_with: Callable[[str], None],
) -> None:
    slug = model_slug(model_name)
    version_with(AUTOSCALED)  # at most 10: the HPA would rescale 12 down to 10 while it exists
    reconcile_once(deps)
    version_with(IRIS_CONTRACT + "serving:\n  replicas: 12\n")

    update = reconcile_once(deps)
    kube.wait_settled(namespace)

    assert (update.updated, update.failed) == (1, 0), update.failures
    assert kube.objects("horizontalpodautoscalers", namespace) == {}
    assert kube.objects("deployments", namespace)[slug]["spec"]["replicas"] == 12
    assert reconcile_once(deps).unchanged == 1
    assert kube.objects("deployments", namespace)[slug]["spec"]["replicas"] == 12


def test_a_failed_move_to_a_fixed_count_gets_its_hpa_back(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, version_with: Callable[[str], None],
) -> None:
    slug = model_slug(model_name)
    version_with(AUTOSCALED)
    reconcile_once(deps)
    hpa = kube.objects("horizontalpodautoscalers", namespace)[slug]
    kube.set_rollout_policy(lambda template: crash("boom") if (template["metadata"].get("annotations") or {}).get(
        "service-builder.io/model-version") == "2" else READY)
    version_with(IRIS_CONTRACT + "serving:\n  replicas: 3\n")

    assert reconcile_once(deps).failed == 1

    back = kube.objects("horizontalpodautoscalers", namespace)[slug]
    assert back["spec"] == hpa["spec"] and back["metadata"]["labels"] == hpa["metadata"]["labels"]
    kube.wait_settled(namespace)
    assert 2 <= kube.objects("deployments", namespace)[slug]["spec"]["replicas"] <= 10
