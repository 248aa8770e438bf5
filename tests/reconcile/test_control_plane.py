"""The test cluster behaves as a real one: API-server write rules and the Deployment controller.

Driven through the official `kubernetes` client, as the watcher drives it. Where the order of states
matters the controller is paused and stepped by hand, so no test depends on timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.peers import DEFAULT_INGRESS_CLASS, PENDING, KubernetesPeer, Pods, all_ready, crash
from tests.rbac import ADMIN_TOKEN
from watcher.config.settings import Settings
from watcher.render.manifests import Rendered
from watcher.targets.kubernetes.cluster import KubernetesTarget


@pytest.fixture
def k8s(kube: KubernetesPeer) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = kube.url
    configuration.api_key = {"authorization": ADMIN_TOKEN}  # another client than the watcher: no Role applies
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)


@pytest.fixture
def stepped(kube: KubernetesPeer) -> Iterator[Any]:
    """The controller paused: `step()` runs exactly one sync of every Deployment."""
    kube.pause_controller()
    assert kube.emulator is not None
    emulator = kube.emulator
    yield lambda: kube.call(emulator.step)
    kube.pause_controller(False)


def manifest(name: str, image: str = "wrapper:1") -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "model", "image": image}]}}}}


def status(k8s: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = k8s.sanitize_for_serialization(client.AppsV1Api(k8s).read_namespaced_deployment(name, namespace))
    return dict(obj)


def counts(obj: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in (obj.get("status") or {}).items() if k.endswith("eplicas")}


def new_image(image: str) -> list[dict[str, Any]]:
    return [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]


def test_generation_moves_only_with_the_spec_and_the_controller_observes_it_later(
    k8s: client.ApiClient, namespace: str, stepped: Any,
) -> None:
    apps = client.AppsV1Api(k8s)
    apps.create_namespaced_deployment(namespace, manifest("m"))
    for _ in range(3):
        stepped()
    apps.patch_namespaced_deployment("m", namespace, [{"op": "add", "path": "/metadata/labels/team", "value": "a"}])
    assert status(k8s, namespace, "m")["metadata"]["generation"] == 1
    # strategy.go: a Deployment's annotations are copied to its ReplicaSets, so changing them is a new generation.
    apps.patch_namespaced_deployment("m", namespace, [{"op": "add", "path": "/metadata/annotations",
                                                       "value": {"team": "a"}}])
    assert status(k8s, namespace, "m")["metadata"]["generation"] == 2
    stepped()

    apps.patch_namespaced_deployment("m", namespace, new_image("wrapper:2"))

    written = status(k8s, namespace, "m")
    assert (written["metadata"]["generation"], written["status"]["observedGeneration"]) == (3, 2)
    stepped()
    assert status(k8s, namespace, "m")["status"]["observedGeneration"] == 3


def test_a_surge_update_keeps_the_old_pod_ready_and_reports_zero_counts_as_absent(
    k8s: client.ApiClient, namespace: str, stepped: Any,
) -> None:
    apps = client.AppsV1Api(k8s)
    apps.create_namespaced_deployment(namespace, manifest("m"))
    for _ in range(4):
        stepped()
    assert counts(status(k8s, namespace, "m")) == {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                                                   "availableReplicas": 1}
    apps.patch_namespaced_deployment("m", namespace, new_image("wrapper:2"))

    seen = []
    for _ in range(5):
        stepped()
        seen.append(counts(status(k8s, namespace, "m")))

    assert seen == [
        {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1},  # updated: absent
        {"replicas": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1},
        {"replicas": 2, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2},
        {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1},
        {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1},
    ]
    final = status(k8s, namespace, "m")
    assert final["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert {c["type"]: c["reason"] for c in final["status"]["conditions"]} == {
        "Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}


def test_crashing_pods_show_restarts_and_their_termination_message_and_the_deadline_passes_without_progress(
    kube: KubernetesPeer, k8s: client.ApiClient, namespace: str,
) -> None:
    def v2_crashes(template: dict[str, Any]) -> Pods:
        if template["spec"]["containers"][0]["image"] == "wrapper:2":
            return crash("model file missing")
        return all_ready(template)

    kube.set_pod_policy(v2_crashes)
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    apps.create_namespaced_deployment(namespace, manifest("m"))
    kube.wait_settled(namespace)
    apps.patch_namespaced_deployment("m", namespace, new_image("wrapper:2"))
    kube.wait_settled(namespace)

    listed = core.list_namespaced_pod(namespace, label_selector="app=m").items
    pods = [k8s.sanitize_for_serialization(p) for p in listed]
    crashing = [c for p in pods for c in p["status"]["containerStatuses"] if not c["ready"]]
    assert len(pods) == 2 and len(crashing) == 1  # the old pod keeps serving
    assert crashing[0]["state"]["waiting"]["reason"] == "CrashLoopBackOff" and crashing[0]["restartCount"] > 0
    assert crashing[0]["lastState"]["terminated"]["message"] == "model file missing"
    assert {c["reason"] for c in status(k8s, namespace, "m")["status"]["conditions"]} >= {"ReplicaSetUpdated"}

    kube.advance(601)  # progressDeadlineSeconds defaults to 600
    kube.wait_settled(namespace)

    progressing = [c for c in status(k8s, namespace, "m")["status"]["conditions"] if c["type"] == "Progressing"]
    assert [(c["status"], c["reason"]) for c in progressing] == [("False", "ProgressDeadlineExceeded")]


def test_a_crashing_container_restarts_at_once_then_on_the_kubelets_back_off_of_10s_doubling_to_5m(
    kube: KubernetesPeer, k8s: client.ApiClient, namespace: str,
) -> None:
    """kubelet.go's backOffPeriod and MaxContainerBackOff, kuberuntime_manager.go's doBackOff, on the emulator's
    clock: the first exit restarts at once; every later one waits its period in CrashLoopBackOff."""
    kube.set_pod_policy(lambda template: crash("the model needs xgboost", exit_code=65))
    client.AppsV1Api(k8s).create_namespaced_deployment(namespace, manifest("m"))
    kube.wait_settled(namespace)

    def container() -> dict[str, Any]:
        kube.wait_settled(namespace)
        pods = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector="app=m").items
        return dict(k8s.sanitize_for_serialization(pods[0])["status"]["containerStatuses"][0])

    first = container()
    assert (first["restartCount"], first["state"]["waiting"]["reason"]) == (1, "CrashLoopBackOff")
    assert first["state"]["waiting"]["message"].startswith("back-off 10s restarting failed container=model pod=m-")
    terminated = first["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (65, "Error",
                                                                                      "the model needs xgboost")
    kube.advance(8)
    assert container()["restartCount"] == 1, "no restart before the 10 s have passed"
    periods = []
    for _ in range(7):
        kube.advance(301)
        waiting = container()
        periods.append((waiting["restartCount"], waiting["state"]["waiting"]["message"].split()[1]))
    assert periods == [(2, "20s"), (3, "40s"), (4, "1m20s"), (5, "2m40s"), (6, "5m0s"), (7, "5m0s"), (8, "5m0s")]


def test_the_default_ingress_class_is_set_on_create_only(k8s: client.ApiClient, namespace: str) -> None:
    net = client.NetworkingV1Api(k8s)
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
               "spec": {"rules": [{"host": "models.example.org"}]}}

    created = net.create_namespaced_ingress(namespace, ingress)
    replaced = net.patch_namespaced_ingress("i", namespace, [{"op": "add", "path": "/spec", "value": ingress["spec"]}])

    assert created.spec.ingress_class_name == DEFAULT_INGRESS_CLASS
    assert replaced.spec.ingress_class_name is None  # an update that drops it loses it: admission runs on create


def test_a_failed_test_op_is_422_a_stale_resource_version_409_and_a_patch_without_one_never_conflicts(
    k8s: client.ApiClient, namespace: str,
) -> None:
    apps = client.AppsV1Api(k8s)
    created = apps.create_namespaced_deployment(namespace, manifest("m"))
    stale = created.metadata.resource_version
    apps.patch_namespaced_deployment("m", namespace, [{"op": "add", "path": "/metadata/labels/a", "value": "1"}])

    with pytest.raises(client.ApiException) as failed_test:
        apps.patch_namespaced_deployment("m", namespace, [{"op": "test", "path": "/metadata/labels/a", "value": "2"}])
    with pytest.raises(client.ApiException) as conflict:
        apps.patch_namespaced_deployment("m", namespace, [
            {"op": "replace", "path": "/metadata/resourceVersion", "value": stale},
            {"op": "add", "path": "/metadata/labels/b", "value": "1"}])
    for _ in range(5):
        apps.patch_namespaced_deployment("m", namespace, [{"op": "add", "path": "/metadata/labels/c", "value": "1"}])

    assert (failed_test.value.status, conflict.value.status) == (422, 409)


def test_lists_are_paged_and_filtered_by_label_selectors(k8s: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(k8s)
    for n in range(5):
        apps.create_namespaced_deployment(namespace, manifest(f"m{n}"))
    apps.create_namespaced_deployment(namespace, manifest("other") | {"metadata": {"name": "other",
                                                                                   "labels": {"app": "x"}}})

    first = apps.list_namespaced_deployment(namespace, limit=4)
    rest = apps.list_namespaced_deployment(namespace, limit=4, _continue=first.metadata._continue)
    selected = apps.list_namespaced_deployment(namespace, label_selector="app=m3")

    assert [d.metadata.name for d in first.items + rest.items] == [*(f"m{n}" for n in range(5)), "other"]
    assert rest.metadata._continue is None
    assert [d.metadata.name for d in selected.items] == ["m3"]


# --- a roll-back to an existing ReplicaSet after a timed-out rollout (sync.go's getNewReplicaSet) ------


def progressing(k8s: client.ApiClient, namespace: str) -> tuple[str, str]:
    deployment = status(k8s, namespace, "m")
    (condition,) = [c for c in deployment["status"]["conditions"] if c["type"] == "Progressing"]
    return condition["reason"], f"{deployment['metadata']['generation']}/{deployment['status']['observedGeneration']}"


def timed_out_then_rolled_back(kube: KubernetesPeer, k8s: client.ApiClient, namespace: str, stepped: Any) -> None:
    """v1 serves; v2's pods never start and its rollout passes the deadline; the template goes back to v1."""
    kube.set_pod_policy(lambda t: PENDING if t["spec"]["containers"][0]["image"] == "wrapper:2" else all_ready(t))
    apps = client.AppsV1Api(k8s)
    apps.create_namespaced_deployment(namespace, manifest("m"))
    for _ in range(4):
        stepped()
    apps.patch_namespaced_deployment("m", namespace, new_image("wrapper:2"))
    for _ in range(3):
        stepped()
    kube.advance(601)
    stepped()
    assert progressing(k8s, namespace) == ("ProgressDeadlineExceeded", "2/2")
    apps.patch_namespaced_deployment("m", namespace, new_image("wrapper:1"))
    stepped()


def test_a_deadline_exceeded_outlives_a_roll_back_to_an_existing_replica_set_until_progress(
    kube: KubernetesPeer, k8s: client.ApiClient, namespace: str, stepped: Any,
) -> None:
    timed_out_then_rolled_back(kube, k8s, namespace, stepped)

    assert progressing(k8s, namespace) == ("ProgressDeadlineExceeded", "3/3")
    for _ in range(3):
        stepped()
    assert progressing(k8s, namespace)[0] == "NewReplicaSetAvailable"


def test_the_watcher_waits_out_a_stale_deadline_after_a_roll_back(
    kube: KubernetesPeer, k8s: client.ApiClient, namespace: str, stepped: Any,
    make_settings: Callable[..., Settings],
) -> None:
    timed_out_then_rolled_back(kube, k8s, namespace, stepped)
    target = KubernetesTarget(make_settings(), sleep=lambda _: kube.call(kube.emulator.step) if kube.emulator else None)
    rendered = Rendered(release=None, manifests=(manifest("m", "wrapper:1"),), spec_hash="")  # type: ignore[arg-type]
    outcome: list[Exception | None] = []

    def wait() -> None:
        try:
            target.wait_ready(rendered, timeout=30)
            outcome.append(None)
        except Exception as e:  # what the watcher would make of it
            outcome.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(60)

    assert outcome == [None], "a healthy roll-back is not a timed-out rollout"
