"""The watcher killed with SIGKILL mid-pass, and two watchers running a pass at the same time.

Both run `python -m watcher run-once` as real processes, as the CronJob does. The test plays the
Deployment controller: rollouts stay pending until it says they are done, so it can act while a
pass is inside one.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes import client

from devstack.models import log_iris
from model_wrapper.contract.naming import model_slug
from tests.faults.support import PLURALS, managed_objects, ready_now, run_watcher, start_watcher, tags, watcher_env
from tests.peers import KubernetesPeer, all_ready
from watcher.config.settings import Settings, load_settings
from watcher.errors import Busy
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.targets.kubernetes.cluster import api_client
from watcher.targets.kubernetes.lease import Lease

pytestmark = pytest.mark.usefixtures("mlflow_server")
LONG_AGO = "2000-01-01T00:00:00.000000Z"


def creates(kube: KubernetesPeer, namespace: str, plural: str) -> int:
    return len([r for r in kube.writes(namespace)
                if r.method.value == "POST" and r.resource is not None and r.resource.plural == plural])


def test_watcher_killed_mid_pass_is_converged_by_the_next_pass_with_no_duplicates_or_orphans(
    make_settings: Callable[..., Settings], make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str,
    model_name: str, production: dict[str, str],
) -> None:
    names = [f"{model_name}-a", f"{model_name}-b"]
    for name in names:
        log_iris(name, kind="tree", tags=production)
    kube.set_rollout_policy(lambda deployment: None)
    watcher = start_watcher(["run-once"], watcher_env(make_settings(rollout_timeout_seconds=120)))
    try:
        first = kube.first_deployment(namespace)
        watcher.send_signal(signal.SIGKILL)
        watcher.wait(10)
    finally:
        watcher.kill()
    assert watcher.returncode == -signal.SIGKILL
    (caught,) = [name for name in names if model_slug(name) == first]
    assert tags(caught)["deployment_status"] == "deploying", "the tags say a rollout was under way"
    assert kube.objects("leases", namespace)["service-builder"]["spec"]["holderIdentity"]

    kube.set_rollout_policy(all_ready)
    ready_now(kube, namespace, first)  # the cluster finishes the rollout without the watcher
    report = reconcile_once(make_deps())
    assert report.skipped and "holds the lease" in report.skipped, "the dead holder's lease is honoured"

    # It expires: its timestamps say so, and (a 2 s duration instead of 60, so the test need not wait a minute)
    # its resourceVersion then stands still for a whole duration while the next pass watches.
    kube.patch_object("leases", namespace, "service-builder", {"spec": {"renewTime": LONG_AGO,
                                                                         "leaseDurationSeconds": 2}})
    report = reconcile_once(make_deps())
    assert report.failed == 0 and not report.skipped, report.failures
    assert {tags(name)["deployment_status"] for name in names} == {"deployed"}
    slugs = {model_slug(name) for name in names}
    assert managed_objects(kube, namespace) == {plural: slugs for plural in PLURALS}, "no orphans"
    for plural in PLURALS:
        assert creates(kube, namespace, plural) == len(names), f"every {plural[:-1]} created exactly once"
    assert reconcile_once(make_deps()).unchanged == len(names)


def test_sigterm_stops_run_once_mid_rollout_releases_the_lease_and_leaves_nothing_deploying(
    make_settings: Callable[..., Settings], make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str,
    model_name: str, production: dict[str, str],
) -> None:
    """What activeDeadlineSeconds, a node drain or an eviction does to the CronJob's pod."""
    log_iris(model_name, kind="tree", tags=production)
    kube.set_rollout_policy(lambda template: None)  # pods never start: the pass waits in the rollout
    watcher = start_watcher(["run-once"], watcher_env(make_settings(rollout_timeout_seconds=120)))
    try:
        slug = kube.first_deployment(namespace)
        watcher.send_signal(signal.SIGTERM)
        _, stderr = watcher.communicate(timeout=30)
    finally:
        watcher.kill()

    assert watcher.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert kube.objects("leases", namespace) == {}, "the lease was released"
    assert managed_objects(kube, namespace) == {plural: set() for plural in PLURALS}, "the new model was taken back"
    stopped = tags(model_name)
    assert stopped["deployment_status"] == "failed" and "stopped by a signal" in stopped["deployment_message"]
    assert stopped.get("deployment_attempt", "") == ""  # not remembered: the next pass tries again
    kube.set_rollout_policy(all_ready)
    report = reconcile_once(make_deps())
    assert (report.deployed, report.failed) == (1, 0), report.failures
    assert slug in kube.objects("deployments", namespace)


def test_two_passes_at_once_deploy_once_and_the_second_steps_aside_cleanly(
    make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    kube.set_rollout_policy(lambda deployment: None)
    env = watcher_env(make_settings(rollout_timeout_seconds=120))
    first = start_watcher(["run-once"], env)
    try:
        slug = kube.first_deployment(namespace)
        second = run_watcher(["run-once"], env)  # starts and ends while the first is inside the rollout
        ready_now(kube, namespace, slug)
        _, first_err = first.communicate(timeout=90)
    finally:
        first.kill()
    assert (first.returncode, second.returncode) == (0, 0), (first_err, second.stderr)
    (first_summary,) = [line for line in first_err.splitlines() if "pass done:" in line]
    (second_summary,) = [line for line in second.stderr.splitlines() if "pass done:" in line]
    assert "deployed=1" in first_summary
    assert "deployed=0" in second_summary and "skipped: another watcher" in second_summary
    assert "Traceback" not in second.stderr
    for plural in PLURALS:
        assert creates(kube, namespace, plural) == 1
    assert managed_objects(kube, namespace) == {plural: {slug} for plural in PLURALS}
    assert tags(model_name)["deployment_status"] == "deployed"


def test_a_pass_that_outlasts_the_lease_duration_keeps_the_lease_and_a_dead_holder_frees_it(
    kube: KubernetesPeer, namespace: str,
) -> None:
    api = client.CoordinationV1Api(api_client(load_settings(mlflow_tracking_uri="http://unused", k8s_api=kube.url)))
    first, second = (Lease(api, namespace, "service-builder", duration=2) for _ in range(2))
    with first.held():
        deadline = time.monotonic() + 5  # two and a half lease durations
        while time.monotonic() < deadline:
            with pytest.raises(Busy), second.held():
                pass
            time.sleep(0.5)
    with second.held():  # released at the end of the pass: free at once
        pass

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # what a holder killed mid-pass leaves behind
    api.create_namespaced_lease(namespace, {"metadata": {"name": "service-builder"}, "spec": {
        "holderIdentity": "killed-watcher", "leaseDurationSeconds": 2, "acquireTime": now, "renewTime": now}})
    with pytest.raises(Busy), second.held():
        pass
    time.sleep(2.5)
    with second.held():
        assert kube.objects("leases", namespace)["service-builder"]["spec"]["holderIdentity"] == second.identity
