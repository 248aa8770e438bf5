"""The Kubernetes API refusing or failing calls: 403, 409, 5xx, and a failure half-way through an apply.

Faults are kmock reactions in the test's own namespace (see kube_faults.py); each test shows the
outcome on the model's tags and on the objects left in the namespace, then that the next pass,
with the fault gone, converges.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from devstack.models import log_iris, register_versions
from model_wrapper.contract.naming import model_slug
from tests.faults.kube_faults import KubeFaults
from tests.faults.support import PLURALS, managed_objects, tags
from tests.peers import READY, KubernetesPeer, crash
from watcher.config.settings import Settings
from watcher.entry import commands
from watcher.errors import Blocked, PassAborted
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.targets.kubernetes.cluster import KubernetesTarget

pytestmark = pytest.mark.usefixtures("mlflow_server")
NOTHING = {plural: set() for plural in PLURALS}


def everything(*slugs: str) -> dict[str, set[str]]:
    return {plural: set(slugs) for plural in PLURALS}


def requests_to(kube: KubernetesPeer, namespace: str, method: str, plural: str) -> int:
    return len([r for r in kube.requests(namespace)
                if r.method.value == method and r.resource is not None and r.resource.plural == plural])


def test_forbidden_create_fails_the_model_naming_verb_and_resource_and_the_fixed_role_takes_effect_next_pass(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, kube_faults: KubeFaults, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    kube_faults.refuse("create", "ingresses", 403)
    report = reconcile_once(make_deps())
    assert report.failed == 1
    found = tags(model_name)
    assert found["deployment_status"] == "failed" and found["deployed"] == "false"
    assert found["deployment_message"] == (
        f"forbidden: the watcher's Role lacks 'create' on ingresses in namespace {namespace}; will retry on the next "
        "pass")
    assert managed_objects(kube, namespace) == NOTHING, "what this attempt created is rolled back"

    kube_faults.clear()  # ops add the missing rule to the Role
    report = reconcile_once(make_deps())
    assert report.deployed == 1, report.failures
    assert managed_objects(kube, namespace) == everything(model_slug(model_name))


def test_forbidden_list_stops_the_pass_before_any_write(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, kube_faults: KubeFaults, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    kube_faults.refuse("list", "services", 403)
    with pytest.raises(Blocked, match=f"lacks 'list' on services in namespace {namespace}"):
        reconcile_once(make_deps())
    assert kube.writes(namespace) == []


def test_conflicts_are_retried_and_the_update_goes_through(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, kube_faults: KubeFaults, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    assert reconcile_once(make_deps()).deployed == 1
    log_iris(model_name, kind="tree", tags=production)  # version 2
    patches_before = requests_to(kube, namespace, "PATCH", "deployments")
    conflict = kube_faults.refuse("patch", "deployments", 409, times=2)
    report = reconcile_once(make_deps())
    assert report.updated == 1 and report.failed == 0, report.failures
    assert len(conflict.answered) == 2
    # two refused, one applied, and one that drops the roll-back note once the update is rolled out
    assert requests_to(kube, namespace, "PATCH", "deployments") - patches_before == 4
    assert tags(model_name, 2)["deployment_status"] == "deployed"
    deployment = kube.objects("deployments", namespace)[model_slug(model_name)]
    assert deployment["metadata"]["annotations"]["service-builder.io/model-version"] == "2"


def test_server_errors_are_retried_a_bounded_number_of_times_then_the_model_fails_and_the_next_pass_retries(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, kube_faults: KubeFaults, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    outage = kube_faults.refuse("get", "deployments", 503)
    report = reconcile_once(make_deps())
    assert report.failed == 1
    assert len(outage.answered) == 3, "three attempts, then give up"
    found = tags(model_name)
    assert found["deployment_status"] == "failed"
    assert "503" in found["deployment_message"] and "Deployment" in found["deployment_message"]
    assert found["deployment_attempt"].endswith(" failures=1"), "transient: not remembered as a permanent failure"
    assert managed_objects(kube, namespace) == NOTHING

    kube_faults.clear()
    assert reconcile_once(make_deps()).deployed == 1
    assert tags(model_name)["deployment_status"] == "deployed"


def test_a_create_whose_500_hid_a_successful_write_is_adopted_not_retried_into_a_conflict(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, kube_faults: KubeFaults, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    lost_answer = kube_faults.refuse("create", "services", 500, times=1, landed=True)
    report = reconcile_once(make_deps())
    assert report.deployed == 1 and report.failed == 0, report.failures
    assert len(lost_answer.answered) == 1
    assert managed_objects(kube, namespace) == everything(model_slug(model_name))
    assert tags(model_name)["deployment_status"] == "deployed"


def test_failure_after_the_deployment_and_before_the_ingress_is_told_truthfully_and_repaired_next_pass(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, kube_faults: KubeFaults, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    slug = model_slug(model_name)
    kube_faults.refuse("create", "ingresses", 503)
    for plural in ("deployments", "services"):  # the roll-back cannot clean up either
        kube_faults.refuse("delete", plural, 503)
    report = reconcile_once(make_deps())
    assert report.failed == 1

    # What could not be removed keeps the policy that guards its pods: the NetworkPolicy is removed last.
    assert managed_objects(kube, namespace) == {"networkpolicies": {slug}, "deployments": {slug}, "services": {slug},
                                                "ingresses": set()}
    found = tags(model_name)
    assert found["deployment_status"] == "failed" and found["deployed"] == "false"
    assert "model_endpoint" not in found
    assert "create Ingress" in found["deployment_message"]
    status: list[str] = []
    commands.status(make_deps(), out=status.append)
    assert any(model_name in row and "(incomplete)" in row for row in status), status

    kube_faults.clear()
    ingress_creates = requests_to(kube, namespace, "POST", "ingresses")
    report = reconcile_once(make_deps())
    assert report.failed == 0, report.failures
    assert managed_objects(kube, namespace) == everything(slug), "no orphans, no duplicates"
    assert requests_to(kube, namespace, "POST", "ingresses") - ingress_creates == 1
    assert tags(model_name)["deployment_status"] == "deployed"
    assert tags(model_name)["model_endpoint"] == f"http://models.example.org/{slug}/api/"


def test_an_api_server_that_accepts_and_never_answers_aborts_the_pass_instead_of_hanging_it(
    make_settings: Callable[..., Settings],
) -> None:
    """A half-open connection (a dead load balancer, a frozen API server) answers nothing, ever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings = make_settings(k8s_api=f"http://127.0.0.1:{silent.getsockname()[1]}",
                                 k8s_request_timeout_seconds=0.5)
        outcome: list[BaseException] = []

        def observe_and_lock() -> None:
            target = KubernetesTarget(settings, sleep=lambda seconds: None)
            for step in (target.observe, target.exclusive().__enter__):
                try:
                    step()
                except BaseException as e:
                    outcome.append(e)

        worker = threading.Thread(target=observe_and_lock, daemon=True)
        worker.start()
        worker.join(120)  # a guard against a hang, not a timing assertion

    assert not worker.is_alive(), "the pass hung on a connection that never answers"
    assert [type(e) for e in outcome] == [PassAborted, PassAborted], outcome
    assert all("unreachable" in str(e) for e in outcome)


def test_a_roll_back_cut_short_by_api_errors_is_finished_by_the_next_pass_and_the_serving_version_stays_deployed(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, kube_faults: KubeFaults, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    logged = log_iris(model_name, kind="tree", tags=production)
    slug = model_slug(model_name)
    assert reconcile_once(make_deps()).deployed == 1
    kube.set_rollout_policy(lambda template: crash("boom") if (template["metadata"].get("annotations") or {}).get(
        "service-builder.io/model-version") == "2" else READY)
    register_versions(model_name, logged, tags=production)
    # The update's own patch goes through; then the API server throttles every patch of the roll-back.
    kube_faults.refuse("patch", "deployments", 429, skip=1, times=6)

    cut_short = reconcile_once(make_deps())

    assert cut_short.failed == 1
    assert tags(model_name, 2)["deployment_status"] == "failed"
    assert tags(model_name, 1)["deployment_status"] == "deployed", "its pods still serve"
    assert env_of(kube, namespace, slug)["MODEL_VERSION"] == "2", "the template is still the failed version"

    finished = reconcile_once(make_deps())

    assert finished.failed == 0, finished.failures
    assert env_of(kube, namespace, slug)["MODEL_VERSION"] == "1"
    assert "service-builder.io/rollback-to" not in kube.objects("deployments", namespace)[slug]["metadata"][
        "annotations"]
    assert (tags(model_name, 1)["deployment_status"], tags(model_name, 2)["deployment_status"]) == (
        "deployed", "failed")
    assert reconcile_once(make_deps()).failed == 0 and env_of(kube, namespace, slug)["MODEL_VERSION"] == "1"


def env_of(kube: KubernetesPeer, namespace: str, slug: str) -> dict[str, str]:
    container = kube.objects("deployments", namespace)[slug]["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container["env"]}
