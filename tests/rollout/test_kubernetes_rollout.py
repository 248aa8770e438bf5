"""Canary and shadow rollouts on the Kubernetes target, in the emulated cluster under the shipped Role: the candidate
runs as its own objects beside the live model's, takes its share as the cluster can split (ingress-nginx's canary
weight, or its replicas behind the one Service), and its figures are read from real wrapper processes' `/metrics`
(the target's pod -> URL seam maps each pod to the wrapper of its version). A failing candidate is rolled back with
the live Deployment untouched, a good one promoted by a surge rollout of the live Deployment; each pass is a fresh
watcher (as the CronJob's processes are) and resumes the step from the tags; a newer version replaces the candidate,
and removing the tag deletes exactly the candidate's objects. A shadow is mirrored by the live wrapper itself, told
so by a ConfigMap the live pods mount, and judged on the answers it compared; a canary bounded by its agreement with
live is mirrored the other way, by its own wrapper asking the live pods, and judged on that comparison.

The data plane (what ingress-nginx and the Service's endpoints do with a request) is `Plane` below: it reads the
objects the watcher wrote and sends each request to a Ready pod's wrapper as they would; the kubelet's projection of
the `<slug>-shadow` ConfigMap into the live pods is the test writing its data to the live wrapper's SHADOW_CONFIG
file, with the candidate Service's name resolved to the candidate wrapper's address; a canary candidate's pods are a
wrapper process started with the mirroring environment of its Deployment's pod template, the Service it names resolved
to the wrapper of the pods that Service selects."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from devstack.models import LoggedModel, iris_frame, log_sklearn_model, register_versions
from devstack.servers import LocalMlflow
from model_wrapper.contract.naming import model_slug
from model_wrapper.http.shadow import MIRRORED_HEADER
from tests.peers import KubernetesPeer, all_ready
from tests.reconcile.test_local_front import Recorder
from tests.rollout.conftest import PrometheusServer, caught_up, rollout_contract, scraped, tags
from tests.wrapper.conftest import WrapperProcess, model_env
from watcher.clients.scrape import metrics_text, parse_comparison
from watcher.config.settings import Settings
from watcher.entry.cli import build_deps
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.render.candidate import NGINX_WEIGHT, candidate_name
from watcher.render.manifests import MODEL_VERSION
from watcher.targets.kubernetes.candidates import pod_metrics_base
from watcher.targets.kubernetes.cluster import KubernetesTarget

FAILING = """\
  strategy: canary
  steps: [20, 50]
  analysis: {interval: 30, min_requests: 20, max_error_rate: 0.01}
"""
GOOD = """\
  strategy: canary
  steps: [50]
  analysis: {interval: 30, min_requests: 10, max_error_rate: 0.01, max_p99_ms: 5000}
"""
SHADOW = """\
  strategy: shadow
  sample: 1.0
  analysis: {interval: 30, min_requests: 20, max_error_rate: 0.01, min_agreement: 0.95}
"""
ASKING = """\
  strategy: canary
  steps: [50]
  analysis: {interval: 30, min_requests: 20, max_error_rate: 0.01, min_agreement: 0.9}
"""
HOLDING = """\
  strategy: canary
  steps: [30]
  analysis: {interval: 3600, min_requests: 1}
"""
CANDIDATE_PLURALS = ("deployments", "services", "ingresses", "networkpolicies")


@dataclass
class Wrappers:
    """One wrapper process per role, shared by the module: the live iris, a good candidate (iris again) and the
    flaky candidate (5xx on 22% of the iris rows)."""

    live: WrapperProcess
    good: WrapperProcess
    flaky: WrapperProcess
    flaky_model: LoggedModel
    shadow_file: Path
    """The live wrapper's SHADOW_CONFIG (absent: it mirrors nothing)."""
    slugs: dict[int, str]
    """Each wrapper's own slug, by port (where its routes are)."""

    def predict_url(self, wrapper: WrapperProcess) -> str:
        return wrapper.base(self.slugs[wrapper.port]) + "predict"


@pytest.fixture(scope="module")
def wrappers(mlflow_server: LocalMlflow, iris: LoggedModel, flaky_iris: Callable[[str, str], str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wrappers]:
    name = "k8s-rollout-flaky-files"
    version = flaky_iris(name, rollout_contract(FAILING))
    found = MlflowClient().get_model_version(name, version)
    flaky = LoggedModel(name, version, found.source, str(found.run_id), None)
    shadow_file = tmp_path_factory.mktemp("shadow") / "shadow.json"
    processes = [WrapperProcess(model_env(model, mlflow_server, SHADOW_CONFIG=str(shadow_file))).start()
                 for model in (iris, iris, flaky)]
    slugs = {process.port: model_slug(model.name) for process, model in zip(processes, (iris, iris, flaky),
                                                                           strict=True)}
    try:
        for process in processes:
            process.wait_until(process.base(slugs[process.port]) + "ready")
        yield Wrappers(*processes, flaky_model=flaky, shadow_file=shadow_file, slugs=slugs)
    finally:
        for process in processes:
            process.stop()


class Plane:
    """What the cluster's data plane does with a caller's request to the model's host and path: ingress-nginx
    sends `canary-weight`% to the canary Ingress's Service, the rest to the main one; a Service sends it to one of
    the Ready pods its selector matches. Each pod is the wrapper of its version (`by_version`)."""

    def __init__(self, kube: KubernetesPeer, namespace: str, slug: str, by_version: dict[str, WrapperProcess],
                 wrappers: Wrappers) -> None:
        self.kube, self.namespace, self.slug = kube, namespace, slug
        self.by_version, self.wrappers = by_version, wrappers
        self.rows = iris_frame()[0].to_dict(orient="records")
        self.answers: dict[str, list[int]] = {}
        """The status codes each version answered, by version."""

    def send(self, count: int) -> None:
        ingresses = self.kube.objects("ingresses", self.namespace)
        services = self.kube.objects("services", self.namespace)
        pods = [p for p in self.kube.objects("pods", self.namespace).values() if pod_metrics_base(p)]
        canary = ingresses.get(candidate_name(self.slug))
        weight = int(canary["metadata"]["annotations"][NGINX_WEIGHT]) if canary else 0
        random.seed(count)
        with httpx.Client(timeout=10) as client:
            for _ in range(count):
                service = services[candidate_name(self.slug) if random.randrange(100) < weight else self.slug]
                selector = service["spec"]["selector"]
                behind = [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]
                version = random.choice(behind)["metadata"]["annotations"][MODEL_VERSION]
                answer = client.post(self.wrappers.predict_url(self.by_version[version]),
                                     json={"instances": [random.choice(self.rows)]})
                self.answers.setdefault(version, []).append(answer.status_code)


@pytest.fixture
def fresh_deps(make_settings: Callable[..., Settings], kube: KubernetesPeer) -> Callable[..., Deps]:
    """A new watcher for each pass (as each CronJob run is), on the emulator's clock, reading each pod's
    `/metrics` from the wrapper process `pod_urls` names for its version."""
    def make(pod_urls: dict[str, WrapperProcess], **overrides: Any) -> Deps:
        settings = make_settings(rollout_timeout_seconds=30, **overrides)

        def pod_url(pod: dict[str, Any]) -> str | None:
            wrapper = pod_urls.get(pod["metadata"]["annotations"][MODEL_VERSION])
            return f"http://127.0.0.1:{wrapper.port}" if wrapper and pod_metrics_base(pod) else None

        emulator = kube.emulator
        assert emulator is not None
        return build_deps(settings, clock=emulator.now, target=KubernetesTarget(settings, pod_url=pod_url))

    return make


def candidate_objects(kube: KubernetesPeer, namespace: str, slug: str) -> dict[str, dict[str, Any]]:
    return {plural: obj for plural in CANDIDATE_PLURALS
            if (obj := kube.objects(plural, namespace).get(candidate_name(slug))) is not None}


def live_deployment(kube: KubernetesPeer, namespace: str, slug: str) -> dict[str, Any]:
    return kube.objects("deployments", namespace)[slug]


def deploy_live(kube: KubernetesPeer, deps: Deps, name: str, iris: LoggedModel, production: dict[str, str]) -> str:
    """Version 1 served, with every new pod turning ready as the controller creates it; the model's slug."""
    kube.set_rollout_policy(all_ready)
    register_versions(name, iris, tags=production)
    first = reconcile_once(deps)
    assert (first.deployed, first.failed) == (1, 0), first.failures
    return model_slug(name)


def test_a_failing_canary_is_rolled_back_by_its_figures_and_the_live_deployment_is_never_touched(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str], wrappers: Wrappers,
) -> None:
    urls = {"1": wrappers.live, "2": wrappers.flaky}
    slug = deploy_live(kube, fresh_deps(urls, ingress_class_name="nginx"), model_name, iris, production)
    before = live_deployment(kube, namespace, slug)
    flaky = register_versions(model_name, wrappers.flaky_model, tags=production)[0]

    started = reconcile_once(fresh_deps(urls, ingress_class_name="nginx"))

    assert started.failed == 0, started.failures
    on_trial = tags(model_name, flaky)
    assert (on_trial["deployment_status"], on_trial["rollout_status"]) == ("deploying", "canary 20%")
    created = candidate_objects(kube, namespace, slug)
    assert sorted(created) == sorted(CANDIDATE_PLURALS)
    assert created["ingresses"]["metadata"]["annotations"][NGINX_WEIGHT] == "20"
    assert created["deployments"]["metadata"]["annotations"][MODEL_VERSION] == flaky
    held = reconcile_once(fresh_deps(urls, ingress_class_name="nginx"))  # a new process, no figures yet
    assert tags(model_name, flaky)["rollout_step"] == on_trial["rollout_step"], "the same step, resumed"
    assert held.failed == 0 and tags(model_name, flaky)["rollout_status"] == "canary 20%"

    plane = Plane(kube, namespace, slug, urls, wrappers)
    plane.send(200)
    judged = reconcile_once(fresh_deps(urls, ingress_class_name="nginx"))

    assert judged.failed == 1
    after = tags(model_name, flaky)
    assert (after["deployment_status"], after["rollout_status"]) == ("failed", "rolled back")
    assert after["deployment_message"].startswith("rolled back: 5xx rate ")
    assert "version 1 served throughout" in after["deployment_message"]
    assert candidate_objects(kube, namespace, slug) == {}
    now = live_deployment(kube, namespace, slug)
    assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "never written"
    assert set(plane.answers["1"]) == {200} and 500 in set(plane.answers[flaky])
    assert tags(model_name, 1)["deployment_status"] == "deployed"
    run = MlflowClient().get_model_version(model_name, flaky).run_id
    assert MlflowClient().get_run(run).data.metrics["rollout_error_rate"] > 0.01, "the figures are logged to MLflow"
    steady = reconcile_once(fresh_deps(urls, ingress_class_name="nginx"))  # the verdict is remembered
    assert (steady.updated, steady.failed) == (0, 0) and candidate_objects(kube, namespace, slug) == {}


def test_a_good_canary_by_replica_ratio_is_promoted_by_a_surge_rollout_of_the_live_deployment(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str], wrappers: Wrappers, variant: Callable[..., str],
) -> None:
    slug = deploy_live(kube, fresh_deps({}), model_name, iris, production)
    endpoint = tags(model_name, 1)["model_endpoint"]
    good = variant(model_name, iris, {"contract.yaml": rollout_contract(GOOD).encode()}, production)
    urls = {"1": wrappers.live, good: wrappers.good}

    reconcile_once(fresh_deps(urls))

    assert tags(model_name, good)["rollout_status"] == "canary 50%"
    assert sorted(candidate_objects(kube, namespace, slug)) == ["deployments"], "no Service or Ingress of its own"
    plane = Plane(kube, namespace, slug, urls, wrappers)
    plane.send(60)
    assert {"1", good} <= set(plane.answers), "the one Service sends to both versions' pods"
    holding = reconcile_once(fresh_deps(urls))
    assert holding.failed == 0 and tags(model_name, good)["rollout_status"] == "canary 50%", "its interval runs"
    kube.advance(31)
    mark = len(kube.writes(namespace))

    promoted = reconcile_once(fresh_deps(urls))

    assert promoted.failed == 0, promoted.failures
    after = tags(model_name, good)
    assert (after["deployment_status"], after["rollout_status"]) == ("deployed", "promoted")
    assert after["model_endpoint"] == endpoint and tags(model_name, 1)["deployment_status"] == "superseded"
    live = live_deployment(kube, namespace, slug)
    assert live["metadata"]["annotations"][MODEL_VERSION] == good
    assert live["spec"]["template"]["metadata"]["annotations"][MODEL_VERSION] == good
    assert candidate_objects(kube, namespace, slug) == {}
    writes = [(r.method.value, r.resource.plural if r.resource else "", r.name)
              for r in kube.writes(namespace)[mark:] if r.resource and r.resource.plural == "deployments"]
    assert writes[0] == ("PATCH", "deployments", slug) and writes[-1] == ("DELETE", "deployments",
                                                                         candidate_name(slug)), \
        "the live Deployment rolls to the new version before the candidate's pods go"
    assert after["rollout_summary"].startswith(f"candidate v{good}: ")
    assert ", 5xx 0.0%, p99 " in after["rollout_summary"]
    assert set(plane.answers["1"]) == set(plane.answers[good]) == {200}


def test_a_newer_version_replaces_the_candidate_and_removing_the_tag_deletes_exactly_its_objects(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str], wrappers: Wrappers, variant: Callable[..., str],
) -> None:
    slug = deploy_live(kube, fresh_deps({}, ingress_class_name="nginx"), model_name, iris, production)
    before = live_deployment(kube, namespace, slug)
    files = {"contract.yaml": rollout_contract(HOLDING).encode()}
    second = variant(model_name, iris, files, production)
    reconcile_once(fresh_deps({}, ingress_class_name="nginx"))
    assert candidate_objects(kube, namespace, slug)["deployments"]["metadata"]["annotations"][MODEL_VERSION] == second

    third = variant(model_name, iris, files, production)
    replaced = reconcile_once(fresh_deps({}, ingress_class_name="nginx"))

    assert replaced.failed == 0, replaced.failures
    assert tags(model_name, second)["deployment_status"] == "superseded"
    objects = candidate_objects(kube, namespace, slug)
    assert objects["deployments"]["metadata"]["annotations"][MODEL_VERSION] == third
    assert objects["ingresses"]["metadata"]["annotations"][NGINX_WEIGHT] == "30"
    assert tags(model_name, third)["rollout_status"] == "canary 30%"

    for version in (second, third):
        MlflowClient().delete_model_version_tag(model_name, version, next(iter(production)))
    mark = len(kube.writes(namespace))
    dropped = reconcile_once(fresh_deps({}, ingress_class_name="nginx"))

    assert dropped.failed == 0, dropped.failures
    writes = {(r.method.value, r.resource.plural if r.resource else "", r.name) for r in kube.writes(namespace)[mark:]
              if r.resource and r.resource.plural != "leases"}
    assert writes == {("DELETE", plural, candidate_name(slug)) for plural in CANDIDATE_PLURALS}
    assert tags(model_name, third)["deployment_status"] == "undeployed"
    assert live_deployment(kube, namespace, slug)["metadata"]["resourceVersion"] == \
        before["metadata"]["resourceVersion"] and tags(model_name, 1)["deployment_status"] == "deployed"


def test_a_shadow_is_mirrored_by_the_live_wrapper_and_promoted_on_the_answers_it_compared(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str], wrappers: Wrappers, variant: Callable[..., str],
) -> None:
    slug = deploy_live(kube, fresh_deps({}, ingress_class_name="nginx"), model_name, iris, production)
    good = variant(model_name, iris, {"contract.yaml": rollout_contract(SHADOW).encode()}, production)
    urls = {"1": wrappers.live, good: wrappers.good}

    reconcile_once(fresh_deps(urls, ingress_class_name="nginx"))

    assert tags(model_name, good)["rollout_status"] == "shadowing"
    assert sorted(candidate_objects(kube, namespace, slug)) == ["deployments", "networkpolicies", "services"], \
        "a shadow has no Ingress: it answers no caller"
    port = kube.objects("services", namespace)[slug]["spec"]["ports"][0]["port"]
    config = json.loads(kube.objects("configmaps", namespace)[f"{slug}-shadow"]["data"]["shadow.json"])
    assert config == {"candidate": f"http://{candidate_name(slug)}.{namespace}.svc:{port}", "version": good,
                      "sample": 1.0}
    live_pod = next(p for p in kube.objects("pods", namespace).values() if p["metadata"]["labels"].get(
        "app.kubernetes.io/instance") == slug)
    assert {"name": "shadow", "configMap": {"name": f"{slug}-shadow", "optional": True, "defaultMode": 0o444}} in \
        live_pod["spec"]["volumes"], "every live pod mounts it, so no pod rolls for a shadow"
    try:
        wrappers.shadow_file.write_text(json.dumps({**config, "candidate": f"http://127.0.0.1:{wrappers.good.port}"}))
        plane = Plane(kube, namespace, slug, urls, wrappers)
        plane.send(40)
        assert set(plane.answers) == {"1"} and set(plane.answers["1"]) == {200}, "only the live version answers"
        deadline = time.monotonic() + 20
        while parse_comparison(metrics_text(f"http://127.0.0.1:{wrappers.live.port}"), good).compared < 40:
            assert time.monotonic() < deadline, "the live wrapper never compared its mirrored requests"
            time.sleep(0.1)
        holding = reconcile_once(fresh_deps(urls, ingress_class_name="nginx"))
        assert holding.failed == 0 and tags(model_name, good)["rollout_status"] == "shadowing"
        kube.advance(31)
        promoted = reconcile_once(fresh_deps(urls, ingress_class_name="nginx"))
    finally:
        wrappers.shadow_file.unlink(missing_ok=True)

    assert promoted.failed == 0, promoted.failures
    after = tags(model_name, good)
    assert (after["deployment_status"], after["rollout_status"]) == ("deployed", "promoted")
    assert "agreement 100.0% of " in after["rollout_summary"]
    assert f"{slug}-shadow" not in kube.objects("configmaps", namespace) and not candidate_objects(kube, namespace,
                                                                                                   slug)
    assert live_deployment(kube, namespace, slug)["metadata"]["annotations"][MODEL_VERSION] == good


def test_the_live_wrapper_answers_every_caller_whatever_becomes_of_its_mirrored_requests(wrappers: Wrappers) -> None:
    live = f"http://127.0.0.1:{wrappers.live.port}"
    rows = iris_frame()[0].to_dict(orient="records")[:30]
    try:
        with socket.socket() as closed:  # a candidate address nobody listens on
            closed.bind(("127.0.0.1", 0))
            gone = f"http://127.0.0.1:{closed.getsockname()[1]}"
        wrappers.shadow_file.write_text(json.dumps({"candidate": gone, "version": "99", "sample": 1.0}))
        time.sleep(1.1)  # the config is looked at once a second
        with httpx.Client(timeout=10) as client:
            marked = client.post(wrappers.predict_url(wrappers.live), json={"instances": rows[:1]},
                                 headers={MIRRORED_HEADER: "1"}).status_code  # a mirror's: never mirrored again
            statuses = {client.post(wrappers.predict_url(wrappers.live), json={"instances": [row]}).status_code
                        for row in rows} | {marked}
            deadline = time.monotonic() + 10
            while mirror_failures(text := metrics_text(live)) < len(rows) and time.monotonic() < deadline:
                time.sleep(0.1)
            wrappers.shadow_file.write_text("{not json")
            time.sleep(1.1)
            after_bad = client.post(wrappers.predict_url(wrappers.live), json={"instances": rows[:1]}).status_code
    finally:
        wrappers.shadow_file.unlink(missing_ok=True)

    assert statuses == {200} and after_bad == 200, "the caller's answer never waits for, or fails with, a mirror"
    outcomes = {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "model_wrapper_shadow_total" and s.labels.get("candidate") == "99"}
    assert outcomes == {"mirror_failed": len(rows)}


def test_a_mirrored_request_reaches_the_other_version_with_its_target_as_the_caller_sent_it(
    wrappers: Wrappers,
) -> None:
    recorder = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    url = wrappers.predict_url(wrappers.live) + "?x=%2F%20y&flag"
    try:
        wrappers.shadow_file.write_text(json.dumps({"candidate": f"http://127.0.0.1:{recorder.server_port}",
                                                    "version": "98", "sample": 1.0}))
        time.sleep(1.1)  # the config is looked at once a second
        answered = httpx.post(url, json={"instances": iris_frame()[0].to_dict(orient="records")[:1]}, timeout=10)
        deadline = time.monotonic() + 10
        while not Recorder.seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        wrappers.shadow_file.unlink(missing_ok=True)
        recorder.shutdown()

    assert answered.status_code == 200
    assert Recorder.seen[-1] == url.removeprefix(f"http://127.0.0.1:{wrappers.live.port}"), "as sent, not re-encoded"
    assert {name.lower(): value for name, value in Recorder.headers_seen[-1].items()}[MIRRORED_HEADER] == "1"


def mirror_failures(text: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "model_wrapper_shadow_total" and s.labels.get("candidate") == "99"
               and s.labels.get("outcome") == "mirror_failed")


def test_a_candidate_deployment_deleted_by_hand_fails_the_trial_and_its_other_objects_go(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str], variant: Callable[..., str],
) -> None:
    slug = deploy_live(kube, fresh_deps({}, ingress_class_name="nginx"), model_name, iris, production)
    second = variant(model_name, iris, {"contract.yaml": rollout_contract(HOLDING).encode()}, production)
    reconcile_once(fresh_deps({}, ingress_class_name="nginx"))
    kube.delete("apis/apps/v1", namespace, "deployments", candidate_name(slug))

    looked = reconcile_once(fresh_deps({}, ingress_class_name="nginx"))
    cleaned = reconcile_once(fresh_deps({}, ingress_class_name="nginx"))

    assert looked.failed == 1 and "the candidate's Deployment is gone" in tags(model_name, second)["deployment_message"]
    assert cleaned.failed == 0 and candidate_objects(kube, namespace, slug) == {}
    assert tags(model_name, 1)["deployment_status"] == "deployed"


def test_a_shadow_replacing_a_replica_ratio_canary_gets_a_deployment_of_its_own(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str], variant: Callable[..., str],
) -> None:
    """The replica ratio's candidate selects with the live labels, a shadow's with its own: a Deployment's selector
    cannot change, so the earlier one goes and the shadow's is created."""
    slug = deploy_live(kube, fresh_deps({}), model_name, iris, production)
    variant(model_name, iris, {"contract.yaml": rollout_contract(HOLDING).encode()}, production)
    reconcile_once(fresh_deps({}))
    shadowed = variant(model_name, iris, {"contract.yaml": rollout_contract(SHADOW).encode()}, production)

    replaced = reconcile_once(fresh_deps({}))

    assert replaced.failed == 0, replaced.failures
    assert tags(model_name, shadowed)["rollout_status"] == "shadowing"
    objects = candidate_objects(kube, namespace, slug)
    assert sorted(objects) == ["deployments", "networkpolicies", "services"]
    assert objects["deployments"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == \
        candidate_name(slug)
    assert json.loads(kube.objects("configmaps", namespace)[f"{slug}-shadow"]["data"]["shadow.json"])["version"] \
        == shadowed


@contextmanager
def candidate_pod(kube: KubernetesPeer, namespace: str, slug: str, urls: dict[str, WrapperProcess],
                  wrappers: Wrappers, mlflow_server: LocalMlflow) -> Iterator[str]:
    """The kubelet's part for a canary candidate's pods: a wrapper of the candidate's version, started with the
    mirroring environment the watcher rendered into its pod template, the Service named there resolved to the
    wrapper of the (one version of) pods that Service selects; the candidate's version, served meanwhile."""
    deployment = kube.objects("deployments", namespace)[candidate_name(slug)]
    version = deployment["metadata"]["annotations"][MODEL_VERSION]
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
           if "value" in e}
    service = kube.objects("services", namespace)[urlsplit(env["MIRROR_TO_LIVE"]).hostname.split(".")[0]]
    selected = {p["metadata"]["annotations"][MODEL_VERSION] for p in kube.objects("pods", namespace).values()
                if service["spec"]["selector"].items() <= p["metadata"]["labels"].items() and pod_metrics_base(p)}
    assert selected == {"1"}, f"{service['metadata']['name']} must select the live pods alone, not {selected}"
    found = MlflowClient().get_model_version(env["MODEL_NAME"], version)
    model = LoggedModel(env["MODEL_NAME"], version, found.source, str(found.run_id), None)
    process = WrapperProcess(model_env(model, mlflow_server, MODEL_SLUG=wrappers.slugs[wrappers.live.port],
                                       MIRROR_TO_LIVE=f"http://127.0.0.1:{urls['1'].port}",
                                       MIRROR_SAMPLE=env["MIRROR_SAMPLE"])).start()
    wrappers.slugs[process.port] = wrappers.slugs[wrappers.live.port]  # the candidate serves under the live slug
    try:
        process.wait_until(wrappers.predict_url(process).removesuffix("predict") + "ready")
        urls[version] = process
        yield version
    finally:
        process.stop()


def compared_all(wrapper: WrapperProcess, version: str, answered: int) -> None:
    """Wait until the candidate has compared each request it answered (its mirrors run after the answers)."""
    deadline = time.monotonic() + 20
    while parse_comparison(metrics_text(f"http://127.0.0.1:{wrapper.port}"), version).compared < answered:
        assert time.monotonic() < deadline, "the candidate never compared its answers with live's"
        time.sleep(0.1)


def test_a_canary_that_disagrees_with_live_is_rolled_back_on_the_agreement_its_own_wrapper_counted(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str], wrappers: Wrappers, mlflow_server: LocalMlflow, prometheus: PrometheusServer,
) -> None:
    """Judged on Prometheus' series (PROMETHEUS_URL), once they equal what the pods' own `/metrics` say."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    urls = {"1": wrappers.live}
    slug = deploy_live(kube, fresh_deps(urls, ingress_class_name="nginx"), model_name, iris, production)
    features, target = iris_frame()
    unlearnt = LogisticRegression(max_iter=500).fit(features, np.random.default_rng(0).permutation(target))
    log_sklearn_model(model_name, unlearnt, features, contract=rollout_contract(ASKING), tags=production,
                      pip_requirements=["scikit-learn"])
    started = reconcile_once(fresh_deps(urls, ingress_class_name="nginx"))
    assert started.failed == 0, started.failures

    with candidate_pod(kube, namespace, slug, urls, wrappers, mlflow_server) as version:
        assert tags(model_name, version)["rollout_status"] == "canary 50%"
        plane = Plane(kube, namespace, slug, urls, wrappers)
        plane.send(100)
        compared_all(urls[version], version, len(plane.answers[version]))
        scraped(prometheus, namespace, model_name, urls)
        figures = caught_up(fresh_deps, urls, slug, prometheus.url, ingress_class_name="nginx")
        judged = reconcile_once(fresh_deps(urls, prometheus_url=prometheus.url, ingress_class_name="nginx"))

    assert figures.comparison.compared == len(plane.answers[version]) and figures.comparison.agreement < 0.9
    assert judged.failed == 1, judged.failures
    after = tags(model_name, version)
    assert (after["deployment_status"], after["rollout_status"]) == ("failed", "rolled back")
    assert after["deployment_message"].startswith("rolled back: agreement with live "), after["deployment_message"]
    assert set(plane.answers["1"]) == set(plane.answers[version]) == {200}, "every caller answered"
    assert candidate_objects(kube, namespace, slug) == {} and tags(model_name, 1)["deployment_status"] == "deployed"


def test_a_canary_that_agrees_with_live_is_promoted_and_then_no_pod_mirrors(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str], wrappers: Wrappers, variant: Callable[..., str], mlflow_server: LocalMlflow,
) -> None:
    urls = {"1": wrappers.live}
    slug = deploy_live(kube, fresh_deps(urls), model_name, iris, production)
    good = variant(model_name, iris, {"contract.yaml": rollout_contract(ASKING).encode()}, production)
    reconcile_once(fresh_deps(urls))
    assert tags(model_name, good)["rollout_status"] == "canary 50%"
    objects = candidate_objects(kube, namespace, slug)
    policy = objects["networkpolicies"]["spec"]
    assert policy["podSelector"]["matchExpressions"] == [{"key": "app.kubernetes.io/instance", "operator": "In",
                                                          "values": [slug]}], "the live pods and the candidate's"
    assert policy["ingress"][0]["from"][-1] == {"podSelector": {"matchLabels": objects["deployments"]["spec"][
        "selector"]["matchLabels"]}}, "admit the candidate's pods, which ask the live ones"

    with candidate_pod(kube, namespace, slug, urls, wrappers, mlflow_server):
        plane = Plane(kube, namespace, slug, urls, wrappers)
        plane.send(60)
        compared_all(urls[good], good, len(plane.answers[good]))
        kube.advance(31)
        promoted = reconcile_once(fresh_deps(urls))

    assert promoted.failed == 0, promoted.failures
    after = tags(model_name, good)
    assert (after["deployment_status"], after["rollout_status"]) == ("deployed", "promoted")
    assert f"agreement 100.0% of {len(plane.answers[good])} compared" in after["rollout_summary"]
    assert live_deployment(kube, namespace, slug)["metadata"]["annotations"][MODEL_VERSION] == good
    assert candidate_objects(kube, namespace, slug) == {}
    mirroring = [p["metadata"]["name"] for p in kube.objects("pods", namespace).values()
                 if any(e["name"] == "MIRROR_TO_LIVE" for e in p["spec"]["containers"][0].get("env", []))]
    assert mirroring == [] and f"{slug}-shadow" not in kube.objects("configmaps", namespace), \
        "the promoted version asks no one (it would be asking itself)"
    assert set(plane.answers["1"]) == set(plane.answers[good]) == {200}
