"""The model lifecycle end to end on real peers: the MLflow server, moto S3 and kmock.

Each test plays a researcher (tags, aliases, stages, deletions in MLflow), sometimes the
Kubernetes controller (the Deployment status kmock reports, a crashing Pod), then runs passes
and looks at what the cluster holds and what the version's tags say.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pytest
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT, LoggedModel, register_versions
from devstack.servers import LocalMlflow
from model_wrapper.contract.naming import model_slug
from model_wrapper.server import EXIT_SOURCES_UNAVAILABLE
from tests.peers import (
    BAD_IMAGE,
    DEFAULT_INGRESS_CLASS,
    PENDING,
    READY,
    KubernetesPeer,
    MlflowAccessLog,
    Pods,
    RolloutPolicy,
    all_ready,
    crash,
)
from tests.reconcile.conftest import FIXED_NOW
from watcher.config.settings import Settings
from watcher.entry import commands
from watcher.entry.cli import build_deps
from watcher.reconcile.deps import Deps, PassReport
from watcher.reconcile.engine import reconcile_once
from watcher.render.manifests import (
    MODEL_VERSION,
    SPEC_HASH,
    TEMPLATES_DIR,
    Renderer,
)

KINDS = ("deployments", "services", "ingresses")
OURS = {"deployments", "services", "ingresses"}
MLMODEL_WITHOUT_SIGNATURE = "flavors:\n  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.7}\n"


def tags(name: str, version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, version).tags)


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def objects(kube: KubernetesPeer, namespace: str) -> dict[str, set[str]]:
    return {plural: set(kube.objects(plural, namespace)) for plural in KINDS}


def object_writes(kube: KubernetesPeer, namespace: str) -> list[str]:
    """Writes to Deployments, Services and Ingresses (the Lease a pass takes is not a model object)."""
    return [f"{r.method.value} {r.resource.plural}/{r.name or ''}" for r in kube.writes(namespace)
            if r.resource is not None and r.resource.plural in OURS]


def passes(deps: Deps, count: int = 1) -> PassReport:
    report = PassReport()
    for _ in range(count):
        report = reconcile_once(deps)
    return report


def only_for(version: str, pods: Pods) -> RolloutPolicy:
    """Pods of one model version do as `pods` says; every other template's pods become Ready."""

    def choose(template: dict[str, Any]) -> Pods:
        annotations = template["metadata"].get("annotations") or {}
        return pods if annotations.get(MODEL_VERSION) == version else READY

    return choose


def handmade_deployment(name: str) -> dict[str, Any]:
    """A Deployment somebody created by hand: no managed-by label."""
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}


@pytest.fixture
def deps(make_deps: Callable[..., Deps]) -> Deps:
    return make_deps()


# --- new, update, supersede --------------------------------------------------------------------


def test_new_version_rolls_the_same_deployment_and_supersedes_the_old_one_when_ready(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(deps)
    slug = model_slug(model_name)
    endpoint = tags(model_name, "1")["model_endpoint"]

    register_versions(model_name, iris, tags=production)  # v2; v1 keeps its tag too
    report = passes(deps)

    assert (report.updated, report.superseded, report.failed) == (1, 1, 0), report.failures
    assert objects(kube, namespace) == {plural: {slug} for plural in KINDS}
    assert env_of(kube.objects("deployments", namespace)[slug])["MODEL_VERSION"] == "2"
    new, old = tags(model_name, "2"), tags(model_name, "1")
    assert new["deployment_status"] == "deployed" and new["model_endpoint"] == endpoint
    assert old["deployment_status"] == "superseded" and old["deployed"] == "false"
    assert "version 2" in old["deployment_message"]


def test_moving_the_tag_to_a_new_version_updates_and_supersedes_the_old_one(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(deps)
    MlflowClient().delete_model_version_tag(model_name, "1", "deploy")
    register_versions(model_name, iris, tags=production)

    report = passes(deps)

    assert (report.updated, report.superseded, report.undeployed) == (1, 1, 0)
    assert env_of(kube.objects("deployments", namespace)[model_slug(model_name)])["MODEL_VERSION"] == "2"
    assert tags(model_name, "1")["deployment_status"] == "superseded"


def test_several_selected_versions_deploy_the_highest_and_supersede_the_others_once(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, 3, tags=production)

    report = passes(deps)

    assert (report.found, report.deployed, report.superseded) == (3, 1, 2)
    assert env_of(kube.objects("deployments", namespace)[model_slug(model_name)])["MODEL_VERSION"] == "3"
    assert [tags(model_name, v)["deployment_status"] for v in ("1", "2", "3")] == ["superseded", "superseded",
                                                                                   "deployed"]
    before = [tags(model_name, v) for v in ("1", "2", "3")]
    writes = len(kube.writes(namespace))
    again = passes(deps)
    assert (again.superseded, again.unchanged) == (0, 1)
    assert [tags(model_name, v) for v in ("1", "2", "3")] == before and len(kube.writes(namespace)) == writes


def test_an_update_keeps_what_admission_other_controllers_and_people_added(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(deps)
    slug = model_slug(model_name)
    assert kube.objects("ingresses", namespace)[slug]["spec"]["ingressClassName"] == DEFAULT_INGRESS_CLASS
    kube.patch("apis/networking.k8s.io/v1", namespace, "ingresses", slug, [
        {"op": "add", "path": "/metadata/annotations/cert-manager.io~1cluster-issuer", "value": "letsencrypt"},
        {"op": "add", "path": "/metadata/labels/team", "value": "fraud"}])
    kube.patch("apis/apps/v1", namespace, "deployments", slug, [  # what `kubectl rollout restart` writes
        {"op": "add", "path": "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
         "value": "2026-11-30T10:00:00Z"}])
    register_versions(model_name, iris, tags=production)

    report = passes(deps)

    assert (report.updated, report.failed) == (1, 0), report.failures
    ingress, deployment = kube.objects("ingresses", namespace)[slug], kube.objects("deployments", namespace)[slug]
    assert ingress["spec"]["ingressClassName"] == DEFAULT_INGRESS_CLASS  # INGRESS_CLASS_NAME is unset
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["metadata"]["labels"]["team"] == "fraud"
    assert ingress["metadata"]["annotations"][MODEL_VERSION] == "2"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"  # restart was 2
    assert env_of(deployment)["MODEL_VERSION"] == "2"


# --- rollout failures --------------------------------------------------------------------------


def test_failed_rollout_of_a_new_version_rolls_back_and_the_old_version_keeps_serving(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(deps)
    slug = model_slug(model_name)
    serving = kube.objects("deployments", namespace)[slug]
    kube.set_rollout_policy(only_for("2", crash("contract example 1: predict failed: shape mismatch")))
    register_versions(model_name, iris, tags=production)

    report = passes(deps)

    assert (report.failed, report.updated, report.superseded) == (1, 0, 0)
    failed = tags(model_name, "2")
    assert failed["deployment_status"] == "failed" and failed["deployed"] == "false"
    assert "CrashLoopBackOff" in failed["deployment_message"]
    assert "predict failed: shape mismatch" in failed["deployment_message"]
    assert failed["deployment_message"].endswith(
        f"; version 1 keeps serving; once fixed: python -m watcher retry {model_name} 2")
    rolled_back = kube.objects("deployments", namespace)[slug]
    assert env_of(rolled_back)["MODEL_VERSION"] == "1"
    assert rolled_back["spec"] == serving["spec"]
    assert rolled_back["metadata"]["annotations"][SPEC_HASH] == serving["metadata"]["annotations"][SPEC_HASH]
    assert tags(model_name, "1")["deployment_status"] == "deployed"


def test_brand_new_model_that_never_gets_ready_leaves_no_objects(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    kube.set_rollout_policy(lambda template: PENDING)  # no node has room: pods wait, nothing crashes
    register_versions(model_name, iris, tags=production)

    report = passes(make_deps(make_settings(rollout_timeout_seconds=1)))

    assert report.failed == 1 and report.deployed == 0
    failed = tags(model_name, "1")
    message = failed["deployment_message"]
    assert "no progress for 1s (pods: ContainerCreating)" in message and "will retry" in message
    assert failed["deployment_attempt"].endswith(" failures=1")  # the cluster's fault: tried again next pass
    assert objects(kube, namespace) == {plural: set() for plural in KINDS}


def test_a_version_the_cluster_keeps_failing_waits_a_growing_pause_between_passes_which_retry_cuts_short(
    make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str, mlflow_server: LocalMlflow,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    kube.set_rollout_policy(lambda template: PENDING)  # no node has room, for as long as the cluster says
    register_versions(model_name, iris, tags=production)
    settings = make_settings(rollout_timeout_seconds=1)

    def deps_at(seconds: float) -> Deps:  # a fresh Deps each pass, like the CronJob's fresh process: only tags carry
        return build_deps(settings, clock=lambda: FIXED_NOW + timedelta(seconds=seconds))

    assert reconcile_once(deps_at(0)).failed == 1
    assert tags(model_name, "1")["deployment_message"].endswith("; will retry on the next pass")
    assert reconcile_once(deps_at(10)).failed == 1, "the next pass retries a first failure"
    second = tags(model_name, "1")
    retry = f"python -m watcher retry {model_name} 1"
    assert second["deployment_message"].endswith(f"; will retry after 2026-11-22T12:01:10Z (attempt 2 failed; now: "
                                                 f"{retry})")
    assert second["deployment_attempt"].endswith(" failures=2 retry_after=2026-11-22T12:01:10Z")

    mlflow, before = MlflowAccessLog(mlflow_server.workdir / "server.log"), len(kube.requests(namespace))
    mlflow.mark()
    paused = reconcile_once(deps_at(69))
    assert (paused.found, paused.unchanged, paused.failed) == (1, 1, 0)
    assert [(r.method.value, r.name) for r in kube.requests(namespace)[before:]] == [("GET", None)] * 6, \
        "a pause costs what a steady-state pass costs: the six lists"
    assert [path.split("?")[0] for _, path in mlflow.since()] == ["/api/2.0/mlflow/model-versions/search"]

    assert reconcile_once(deps_at(70)).failed == 1, "the pause is over"
    assert tags(model_name, "1")["deployment_message"].endswith(
        f"; will retry after 2026-11-22T12:03:10Z (attempt 3 failed; now: {retry})"), "twice the pause"
    kube.set_rollout_policy(all_ready)
    assert reconcile_once(deps_at(100)).unchanged == 1, "still paused, although the cluster has room now"

    lines: list[str] = []
    assert commands.retry(deps_at(100), model_name, 1, out=lines.append) == 0, lines
    done = tags(model_name, "1")
    assert (done["deployment_status"], done.get("deployment_attempt", "")) == ("deployed", "")
    assert lines[-1] == f"{model_name} v1: deployed: {done['deployment_message']}"


def test_pods_of_another_release_with_the_same_instance_label_are_not_taken_for_ours(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    kube.create("api/v1", namespace, {  # a Helm release that happens to use the same instance name
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{slug}-redis-0", "labels": {
            "app.kubernetes.io/instance": slug, "app.kubernetes.io/name": "redis"}},
        "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}})
    # The API server drops the status of a create; the kubelet writes it afterwards, as here.
    kube.patch_object("pods", namespace, f"{slug}-redis-0", {"status": {"containerStatuses": [{
        "name": "redis", "image": "redis:7", "imageID": "", "ready": False, "started": False, "restartCount": 9,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "redis is broken"}}}]}})
    assert kube.objects("pods", namespace)[f"{slug}-redis-0"]["status"]["containerStatuses"][0]["restartCount"] == 9
    kube.set_rollout_policy(lambda template: PENDING)
    register_versions(model_name, iris, tags=production)
    # Our pods start only once the watcher has looked at the pods (the crash-looping one among them), so a
    # watcher that took that pod for ours fails the rollout, and one that does not sees it through.
    looked = threading.Thread(target=_ready_once_pods_are_listed, args=(kube, namespace), daemon=True)
    looked.start()

    report = passes(make_deps(make_settings(rollout_timeout_seconds=60)))
    looked.join(60)

    assert (report.deployed, report.failed) == (1, 0), report.failures
    assert tags(model_name, "1")["deployment_status"] == "deployed"


def _ready_once_pods_are_listed(kube: KubernetesPeer, namespace: str) -> None:
    deadline = time.monotonic() + 120  # a guard: the pass fails the test by itself if this never happens
    while time.monotonic() < deadline:
        if any(r.method.value == "GET" and r.resource is not None and r.resource.plural == "pods" and r.name is None
               for r in kube.requests(namespace)):
            kube.set_rollout_policy(all_ready)
            return
        time.sleep(0.1)


def test_failed_version_is_not_retried_until_its_inputs_change(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    def broken_image_crashes(template: dict[str, Any]) -> Pods:
        return crash("cannot load") if template["spec"]["containers"][0]["image"].endswith(":broken") else READY

    kube.set_rollout_policy(broken_image_crashes)
    register_versions(model_name, iris, tags=production)
    broken = make_deps(make_settings(model_wrapper_image="registry.example.org/model-wrapper:broken"))
    assert passes(broken).failed == 1
    failed_tags, writes = tags(model_name, "1"), len(kube.writes(namespace))

    again = passes(broken)

    assert (again.failed, again.unchanged) == (0, 1)
    assert tags(model_name, "1") == failed_tags and len(kube.writes(namespace)) == writes

    fixed = passes(make_deps(make_settings(model_wrapper_image="registry.example.org/model-wrapper:1.1")))

    assert (fixed.deployed, fixed.failed) == (1, 0)
    assert tags(model_name, "1")["deployment_status"] == "deployed"


def test_an_image_that_cannot_be_pulled_blocks_the_version_naming_the_image_and_is_retried_every_pass(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    broken_image = "registry.example.org/model-wrapper:broken"
    kube.set_rollout_policy(lambda t: BAD_IMAGE if t["spec"]["containers"][0]["image"] == broken_image else READY)
    register_versions(model_name, iris, tags=production)
    broken = make_deps(make_settings(model_wrapper_image=broken_image))

    assert passes(broken).failed == 1
    message = tags(model_name, "1")["deployment_message"]
    assert f"image {broken_image} cannot be pulled" in message and message.endswith("will retry on the next pass")
    assert passes(broken).failed == 1, "tried again: a registry outage clears by itself"

    fixed = passes(make_deps(make_settings(model_wrapper_image="registry.example.org/model-wrapper:1.1")))

    assert (fixed.deployed, fixed.failed) == (1, 0)
    assert tags(model_name, "1")["deployment_status"] == "deployed"


OUTAGE = "could not download the model from s3://models/iris: Could not connect to the endpoint URL"


def test_a_crash_from_an_outage_while_the_model_loads_is_not_charged_to_the_version_and_the_next_pass_deploys_it(
    deps: Deps, kube: KubernetesPeer, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    """The wrapper exits EXIT_SOURCES_UNAVAILABLE when S3 or MLflow fail it: no fault of the version."""
    kube.set_rollout_policy(lambda template: crash(OUTAGE, exit_code=EXIT_SOURCES_UNAVAILABLE))
    register_versions(model_name, iris, tags=production)

    assert passes(deps).failed == 1
    message = tags(model_name, "1")["deployment_message"]
    assert "CrashLoopBackOff" in message and OUTAGE in message and "not charged to the version" in message
    assert message.endswith("will retry on the next pass")

    kube.set_rollout_policy(all_ready)  # S3 is back
    after = passes(deps)

    assert (after.deployed, after.failed) == (1, 0), "retried without `python -m watcher retry`"
    assert tags(model_name, "1")["deployment_status"] == "deployed"


def test_a_crash_the_wrapper_did_not_judge_is_charged_to_the_version_only_once_it_repeats_after_a_restart(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, model_name: str, iris: LoggedModel,
    production: dict[str, str],
) -> None:
    kube.set_rollout_policy(lambda template: crash("Fatal Python error: Segmentation fault", exit_code=139))
    register_versions(model_name, iris, tags=production)

    first = passes(make_deps())  # 5 s of rollout timeout: within the kubelet's first 10 s back-off

    assert first.failed == 1 and "not charged to the version" in tags(model_name, "1")["deployment_message"]

    def sleep_on_the_kubelets_clock(seconds: float) -> None:
        kube.advance(seconds)  # the emulator's clock, so the back-off passes without waiting for it
        time.sleep(0.05)

    repeated = passes(make_deps(sleep=sleep_on_the_kubelets_clock))

    assert repeated.failed == 1
    message = tags(model_name, "1")["deployment_message"]
    assert "Segmentation fault (restarted 2 times)" in message and "not charged" not in message
    assert message.endswith(f"once fixed: python -m watcher retry {model_name} 1"), message
    assert passes(make_deps()).unchanged == 1, "charged to the version: not retried until something changes"


def test_version_without_any_contract_fails_with_a_message_saying_how_to_add_one(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, upload: Callable[[dict[str, str]], str],
    production: dict[str, str],
) -> None:
    source = upload({"MLmodel": MLMODEL_WITHOUT_SIGNATURE})
    MlflowClient().create_registered_model(model_name)
    MlflowClient().create_model_version(model_name, source, tags=production)

    report = passes(deps)

    assert report.failed == 1
    version_tags = tags(model_name, "1")
    assert version_tags["deployment_status"] == "failed" and "contract.yaml" in version_tags["deployment_message"]
    assert object_writes(kube, namespace) == []


# --- reconfigure, repair, stale tags ------------------------------------------------------------


@pytest.mark.parametrize(("setting", "value", "check"), [
    ("model_wrapper_image", "registry.example.org/model-wrapper:1.1",
     lambda container: container["image"] == "registry.example.org/model-wrapper:1.1"),
    ("default_memory_limit", "3Gi", lambda container: container["resources"]["limits"]["memory"] == "3Gi"),
])
def test_setting_change_reapplies_the_objects_without_tag_churn(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str], setting: str, value: str,
    check: Callable[[dict[str, Any]], bool],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(make_deps())
    before = tags(model_name, "1")
    changed = make_deps(make_settings(**{setting: value}))

    report = passes(changed)

    assert (report.updated, report.failed) == (1, 0)
    deployment = kube.objects("deployments", namespace)[model_slug(model_name)]
    assert check(deployment["spec"]["template"]["spec"]["containers"][0])
    assert tags(model_name, "1") == before
    writes = len(kube.writes(namespace))
    assert passes(changed).unchanged == 1 and len(kube.writes(namespace)) == writes


def test_template_change_reapplies_the_objects_without_tag_churn(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str], tmp_path: Path,
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(make_deps())
    before = tags(model_name, "1")
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    deployment = templates / "deployment.yaml.j2"
    deployment.write_text(deployment.read_text().replace("revisionHistoryLimit: 3", "revisionHistoryLimit: 5"))
    settings = make_settings()

    report = passes(make_deps(settings, renderer=Renderer(settings, templates)))

    assert (report.updated, report.failed) == (1, 0)
    assert kube.objects("deployments", namespace)[model_slug(model_name)]["spec"]["revisionHistoryLimit"] == 5
    assert tags(model_name, "1") == before


def test_deleted_ingress_is_recreated_and_nothing_else_is_written(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(deps)
    slug = model_slug(model_name)
    kube.delete("apis/networking.k8s.io/v1", namespace, "ingresses", slug)
    before, writes = tags(model_name, "1"), len(object_writes(kube, namespace))

    report = passes(deps)

    assert report.failed == 0 and slug in kube.objects("ingresses", namespace)
    assert object_writes(kube, namespace)[writes:] == ["POST ingresses/"]
    assert tags(model_name, "1") == before


def test_stale_tags_on_a_running_version_are_rewritten_without_touching_the_cluster(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(deps)
    complete = tags(model_name, "1")
    MlflowClient().set_model_version_tag(model_name, "1", "deployment_status", "deploying")
    MlflowClient().delete_model_version_tag(model_name, "1", "model_endpoint")
    writes = len(object_writes(kube, namespace))

    report = passes(deps)

    assert (report.unchanged, report.failed) == (1, 0)
    assert tags(model_name, "1") == complete
    assert len(object_writes(kube, namespace)) == writes


def test_stale_tags_on_a_version_that_is_not_ready_are_checked_again_next_pass(
    deps: Deps, make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer,
    namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(deps)
    MlflowClient().delete_model_version_tag(model_name, "1", "deployment_status")
    kube.set_rollout_policy(lambda template: PENDING)  # its node is gone; the replacement pod waits for room
    for pod in kube.objects("pods", namespace):
        kube.delete("api/v1", namespace, "pods", pod)

    stuck = passes(make_deps(make_settings(rollout_timeout_seconds=1)))

    assert stuck.failed == 1
    failed = tags(model_name, "1")
    assert failed["deployment_status"] == "failed" and "ContainerCreating" in failed["deployment_message"]
    assert failed["deployment_attempt"].endswith(" failures=1")  # not a permanent verdict: the next pass looks again
    kube.set_rollout_policy(all_ready)

    recovered = passes(deps)

    assert (recovered.unchanged, recovered.failed) == (1, 0)
    assert tags(model_name, "1")["deployment_status"] == "deployed"


# --- objects that are not ours ------------------------------------------------------------------


def test_unmanaged_deployment_with_the_same_name_is_reported_and_never_touched(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    kube.create("apis/apps/v1", namespace, handmade_deployment(slug))
    handmade = kube.objects("deployments", namespace)[slug]
    register_versions(model_name, iris, tags=production)

    report = passes(deps, count=2)

    assert report.failed == 1
    version_tags = tags(model_name, "1")
    assert version_tags["deployment_status"] == "failed"
    assert "not managed by Service Builder" in version_tags["deployment_message"]
    now = kube.objects("deployments", namespace)[slug]  # the controller has rolled it out since
    assert (now["spec"], now["metadata"]["labels"]) == (handmade["spec"], handmade["metadata"]["labels"])
    assert object_writes(kube, namespace) == ["POST deployments/"]  # only the hand-made one


def test_name_held_by_another_models_objects_is_reported(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    passes(deps)
    slug = model_slug(model_name)
    kube.patch_object("deployments", namespace, slug,
                      {"metadata": {"annotations": {"service-builder.io/model-name": "someone-else"}}})
    newcomer = f"{model_name}-2"
    register_versions(newcomer, iris, tags=production)

    report = passes(deps)

    assert report.deployed == 1  # the newcomer has its own slug; the two never meet on one name
    assert model_slug(newcomer) in kube.objects("deployments", namespace)
    failure = tags(model_name, "1")
    assert failure["deployment_status"] == "failed" and "'someone-else'" in failure["deployment_message"]


# --- undeploy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["tag removed", "version deleted", "model deleted"])
def test_model_without_a_selected_version_is_undeployed_and_only_its_objects_go(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
    how: str,
) -> None:
    keeper = f"{model_name}-keeper"
    register_versions(model_name, iris, tags=production)
    register_versions(keeper, iris, tags=production)
    kube.create("apis/apps/v1", namespace, handmade_deployment("handmade"))
    passes(deps)
    client = MlflowClient()
    if how == "tag removed":
        client.delete_model_version_tag(model_name, "1", "deploy")
    elif how == "version deleted":
        client.delete_model_version(model_name, "1")
    else:
        client.delete_registered_model(model_name)

    report = passes(deps)

    assert (report.undeployed, report.failed) == (1, 0), report.failures
    remaining = {model_slug(keeper)}
    assert objects(kube, namespace) == {"deployments": remaining | {"handmade"}, "services": remaining,
                                        "ingresses": remaining}
    if how == "tag removed":
        version_tags = tags(model_name, "1")
        assert (version_tags["deployment_status"], version_tags["deployed"]) == ("undeployed", "false")
    assert tags(keeper, "1")["deployment_status"] == "deployed"


# --- selectors ---------------------------------------------------------------------------------


def test_alias_selector_follows_the_alias_from_version_to_version(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel,
) -> None:
    alias = f"live_{namespace.replace('-', '_')}"
    register_versions(model_name, iris, 2)
    deps = make_deps(make_settings(selector=f"alias:{alias}"))
    client = MlflowClient()
    client.set_registered_model_alias(model_name, alias, "1")
    assert passes(deps).deployed == 1

    client.set_registered_model_alias(model_name, alias, "2")
    moved = passes(deps)
    client.delete_registered_model_alias(model_name, alias)
    removed = passes(deps)

    assert (moved.updated, moved.superseded) == (1, 1)
    assert (removed.undeployed, removed.failed) == (1, 0)
    assert objects(kube, namespace) == {plural: set() for plural in KINDS}
    assert tags(model_name, "2")["deployment_status"] == "undeployed"


def test_stage_selector_deploys_the_version_in_that_stage(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel,
) -> None:
    # Stages are a fixed set shared by the whole registry: only this test moves versions into Staging.
    register_versions(model_name, iris)
    deps = make_deps(make_settings(selector="stage:Staging"))
    client = MlflowClient()
    client.transition_model_version_stage(model_name, "1", "Staging")

    deployed = passes(deps)
    client.transition_model_version_stage(model_name, "1", "Archived")
    archived = passes(deps)

    assert deployed.deployed == 1 and tags(model_name, "1")["deployment_status"] == "undeployed"
    assert archived.undeployed == 1
    assert objects(kube, namespace) == {plural: set() for plural in KINDS}


# --- names -------------------------------------------------------------------------------------


def test_names_that_reduce_alike_get_distinct_stable_endpoints(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    names = [f"Iris Model {model_name}", f"iris-model-{model_name.lower()}", f"iris_model_{model_name}"]
    for name in names:
        register_versions(name, iris, tags=production)

    report = passes(deps)

    assert report.deployed == 3
    slugs = {model_slug(name) for name in names}
    assert len(slugs) == 3 and set(kube.objects("deployments", namespace)) == slugs
    endpoints = {tags(name, "1")["model_endpoint"] for name in names}
    assert endpoints == {f"http://models.example.org/{slug}/api/" for slug in slugs}


def test_serving_overrides_from_the_contract_shape_the_deployment(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, upload: Callable[[dict[str, str]], str],
    production: dict[str, str],
) -> None:
    contract = IRIS_CONTRACT + "serving:\n  replicas: 2\n  resources: {limits: {memory: 768Mi}}\n"
    MlflowClient().create_registered_model(model_name)
    files = upload({"MLmodel": MLMODEL_WITHOUT_SIGNATURE, "contract.yaml": contract})
    MlflowClient().create_model_version(model_name, files, tags=production)

    report = passes(deps)

    assert report.deployed == 1, report.failures
    deployment = kube.objects("deployments", namespace)[model_slug(model_name)]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "768Mi"
    writes = len(kube.writes(namespace))
    assert passes(deps).unchanged == 1 and len(kube.writes(namespace)) == writes


@pytest.mark.parametrize(("resources", "expected"), [
    ("{requests: {memory: 4Gi}}", {"requests": {"cpu": "100m", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}),
    ("{limits: {memory: 128Mi}}", {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}}),
    ("{requests: {cpu: 1500m}, limits: {cpu: '2', memory: 2Gi}}",
     {"requests": {"cpu": "1500m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}),
    ("{requests: {memory: 2Gi}, limits: {memory: 1Gi}}",
     "serving.resources.requests.memory (2Gi) is above serving.resources.limits.memory (1Gi)"),
    ("{requests: {cpu: '2'}, limits: {cpu: 500m}}",
     "serving.resources.requests.cpu (2) is above serving.resources.limits.cpu (500m)"),
], ids=["a request above the default limit", "a limit below the default request", "both, consistent",
        "a memory request above its limit", "a cpu request above its limit"])
def test_a_default_yields_to_the_contracts_resources_and_a_request_above_its_own_limit_fails(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, upload: Callable[[dict[str, str]], str],
    production: dict[str, str], resources: str, expected: dict[str, Any] | str,
) -> None:
    """The API server refuses a Deployment whose request is above its limit (defaults 256Mi and 1Gi here)."""
    MlflowClient().create_registered_model(model_name)
    files = upload({"MLmodel": MLMODEL_WITHOUT_SIGNATURE,
                    "contract.yaml": IRIS_CONTRACT + f"serving:\n  resources: {resources}\n"})
    MlflowClient().create_model_version(model_name, files, tags=production)

    report = passes(deps)

    if isinstance(expected, str):
        assert report.failed == 1 and object_writes(kube, namespace) == []
        assert expected in tags(model_name, "1")["deployment_message"]
    else:
        assert report.deployed == 1, report.failures
        deployment = kube.objects("deployments", namespace)[model_slug(model_name)]
        assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"] == expected


def _run_with_model_files(model: Any) -> str:
    """A run holding a saved model among its own artifacts, as MLflow 2 kept them; its id."""
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run() as run:
        (Path(tmp) / "contract.yaml").write_text(IRIS_CONTRACT)
        mlflow.sklearn.save_model(model, f"{tmp}/model", extra_files=[f"{tmp}/contract.yaml"],
                                  pip_requirements=["scikit-learn"])
        mlflow.log_artifacts(f"{tmp}/model", "model")
    return str(run.info.run_id)


@pytest.mark.parametrize("kept", ["as a logged model (MLflow 3)", "in the run's artifacts (MLflow 2)"])
def test_a_version_registered_from_a_runs_uri_deploys_with_that_source(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel, production: dict[str, str],
    kept: str,
) -> None:
    """`create_model_version(name, "runs:/<run>/model", run_id)`, as MLflow 2 registered models: the
    contract is found where MLflow itself would read the model, and the wrapper gets the source as it is."""
    run_id = iris.run_id if kept.startswith("as a logged model") else _run_with_model_files(iris.model)
    MlflowClient().create_registered_model(model_name)
    MlflowClient().create_model_version(model_name, f"runs:/{run_id}/model", run_id, tags=production)

    report = passes(deps)

    assert report.deployed == 1, report.failures
    deployment = kube.objects("deployments", namespace)[model_slug(model_name)]
    assert env_of(deployment)["MODEL_SOURCE"] == f"runs:/{run_id}/model"
