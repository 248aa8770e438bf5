"""The per-model NetworkPolicy: what it admits, which pods it selects, and how passes manage it.

Rendering is checked as data against the official schemas and the cronjob/ kit (the watcher's
own pod labels); the lifecycle runs real passes against the MLflow server, moto S3 and kmock:
created with the model, updated when the settings change, removed when switched off or when
the model is undeployed, repaired when someone deletes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from devstack.models import LoggedModel, register_versions
from model_wrapper.contract.naming import model_slug
from tests.peers import READY, KubernetesPeer, crash
from watcher.config.settings import Settings, load_settings
from watcher.decide.network import egress_rules, parse_peers
from watcher.errors import SettingsInvalid
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.render.manifests import MODEL_VERSION, Release, Renderer, validate_manifest

ROOT = Path(__file__).resolve().parents[2]
WATCHER_WORKLOADS = (ROOT / "cronjob" / "cronjob.yaml", ROOT / "cronjob" / "watch" / "deployment.yaml")


def render(**overrides: Any) -> dict[str, dict[str, Any]]:
    settings = load_settings(mlflow_tracking_uri="http://mlflow.mlops.svc:5000", k8s_name_space="models",
                             **{"metrics_namespace": "monitoring", **overrides})
    release = Release(name="Iris", version=2, source="models:/m-1", run_id=None, slug=model_slug("Iris"))
    return {m["kind"]: m for m in Renderer(settings).render(release).manifests}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A `matchLabels` selector's verdict on a set of labels (metav1.LabelSelectorAsSelector)."""
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def watcher_pod_labels() -> list[dict[str, str]]:
    labels = []
    for path in WATCHER_WORKLOADS:
        workload = yaml.safe_load(path.read_text())
        spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
        labels.append(spec["template"]["metadata"]["labels"])
    return labels


# --- what it admits and what it selects --------------------------------------------------------


def test_the_policy_selects_exactly_the_models_pods_and_no_other_models_or_the_watchers() -> None:
    renderer = Renderer(load_settings(mlflow_tracking_uri="http://m:5000", k8s_name_space="models"))
    other = {m["kind"]: m for m in renderer.render(Release("Iris 2", 1, "s3://b", None, "iris-2")).manifests}
    mine = render()
    selector = mine["NetworkPolicy"]["spec"]["podSelector"]
    assert selects(selector, mine["Deployment"]["spec"]["template"]["metadata"]["labels"])
    assert selector["matchLabels"] == mine["Service"]["spec"]["selector"]  # the pods the Service sends to
    assert not selects(selector, other["Deployment"]["spec"]["template"]["metadata"]["labels"])
    assert not any(selects(selector, labels) for labels in watcher_pod_labels())
    assert mine["NetworkPolicy"]["metadata"]["namespace"] == mine["Deployment"]["metadata"]["namespace"]


def test_only_the_ingress_controller_the_watcher_and_the_metrics_scraper_reach_the_model_port() -> None:
    policy = render()["NetworkPolicy"]
    deployment = render()["Deployment"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (port,) = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert rule["ports"] == [{"protocol": port["protocol"], "port": port["containerPort"]}]
    ingress_ns, watcher, metrics_ns = rule["from"]
    assert ingress_ns == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert metrics_ns == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    # No namespaceSelector: the watcher's pods in the models' own namespace, where cronjob/ runs them.
    assert set(watcher) == {"podSelector"}
    assert all(selects(watcher["podSelector"], labels) for labels in watcher_pod_labels())


def test_extra_sources_and_a_labelled_ingress_namespace_are_admitted_as_written() -> None:
    policy = render(ingress_namespace="app.kubernetes.io/name=traefik", metrics_namespace=None,
                    network_policy_extra_sources="cidr:10.20.0.0/16 pods:app=probe namespace:team=ml,env=prod")
    sources = policy["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    assert sources[0] == {"namespaceSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}}}
    assert sources[2:] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}, {"podSelector": {"matchLabels": {"app": "probe"}}},
                           {"namespaceSelector": {"matchLabels": {"team": "ml", "env": "prod"}}}]


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("INGRESS_NAMESPACE", "Ingress_Nginx", "neither a namespace name"),
    ("METRICS_NAMESPACE", "team=", "team="),  # an empty value is valid; the pair is not: see below
    ("NETWORK_POLICY_EXTRA_SOURCES", "cidr:10.0.0.1/8", "host bits"),
    ("NETWORK_POLICY_EXTRA_SOURCES", "10.0.0.0/8", "namespace:NAME"),
    ("NETWORK_POLICY_EXTRA_SOURCES", "pods:app=a b", "namespace:NAME"),
    ("NETWORK_POLICY_EXTRA_SOURCES", "pods:-app=x", "label"),
    ("EGRESS_DESTINATIONS", "namespace:" + "n" * 64, "neither a namespace name"),
])
def test_a_source_kubernetes_would_refuse_stops_the_watcher_naming_the_variable(
        variable: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if value == "team=":  # `team=` selects namespaces labelled team="": valid, so the watcher takes it
        assert render(metrics_namespace=value)["NetworkPolicy"]["spec"]["ingress"][0]["from"][2] == {
            "namespaceSelector": {"matchLabels": {"team": ""}}}
        return
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsInvalid, match=variable) as raised:
        load_settings(mlflow_tracking_uri="http://m:5000")
    assert says in str(raised.value)


def test_switched_off_there_is_no_policy_and_every_manifest_is_still_valid() -> None:
    manifests = render(network_policy=False)
    assert set(manifests) == {"Deployment", "Service", "Ingress"}
    for manifest in manifests.values():
        validate_manifest(manifest)


# --- egress (opt-in) ---------------------------------------------------------------------------


def test_egress_admits_dns_and_the_mlflow_and_s3_ports_only_where_their_urls_say() -> None:
    policy = render(egress_policy=True, mlflow_s3_endpoint_url="http://10.1.2.3:9000")["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns, mlflow, s3 = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and {p["protocol"] for p in dns["ports"]} == {"UDP", "TCP"}
    assert mlflow == {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlops"}}}],
                      "ports": [{"protocol": "TCP", "port": 5000}]}
    assert s3 == {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"protocol": "TCP", "port": 9000}]}


@pytest.mark.parametrize(("url", "to", "port"), [
    ("https://mlflow.example.org", None, 443),                    # a public name: only the port is enforced
    ("http://[fd00::5]:5000", [{"ipBlock": {"cidr": "fd00::5/128"}}], 5000),
    ("http://mlflow.mlops.svc.cluster.local", [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "mlops"}}}], 80),
])
def test_each_server_is_reached_on_its_own_port_at_the_address_its_url_gives(
        url: str, to: list[dict[str, Any]] | None, port: int) -> None:
    (_, rule) = egress_rules(urls=[url, url], destinations="")  # one rule for a server named twice
    assert rule.get("to") == to and rule["ports"] == [{"protocol": "TCP", "port": port}]


def test_egress_destinations_given_by_ops_replace_what_the_urls_say() -> None:
    rules = egress_rules(urls=["http://10.0.0.1:5000", "https://s3.amazonaws.com"], destinations="cidr:10.9.0.0/16")
    assert [rule["to"] for rule in rules[1:]] == [parse_peers("cidr:10.9.0.0/16")] * 2
    assert [rule["ports"][0]["port"] for rule in rules[1:]] == [5000, 443]


def test_egress_alone_renders_an_egress_only_policy() -> None:
    policy = render(network_policy=False, egress_policy=True)["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Egress"] and "ingress" not in policy["spec"]


# --- managed by the pass, on kmock -------------------------------------------------------------


def tags_of(name: str, version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, version).tags)


def policies(kube: KubernetesPeer, namespace: str) -> dict[str, dict[str, Any]]:
    return kube.objects("networkpolicies", namespace)


def policy_writes(kube: KubernetesPeer, namespace: str) -> list[str]:
    return [r.method.value for r in kube.writes(namespace) if r.resource and r.resource.plural == "networkpolicies"]


def test_a_pass_creates_the_policy_first_updates_it_with_the_settings_and_undeploy_removes_it(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    register_versions(model_name, iris, tags=production)
    report = reconcile_once(make_deps())
    assert (report.deployed, report.failed) == (1, 0), report.failures
    (policy,) = policies(kube, namespace).values()
    assert policy["spec"]["podSelector"]["matchLabels"] == kube.objects("services", namespace)[slug]["spec"]["selector"]
    first_write = next(r for r in kube.writes(namespace) if r.resource and r.resource.plural != "leases")
    assert first_write.resource is not None and first_write.resource.plural == "networkpolicies"

    unchanged = reconcile_once(make_deps())
    assert (unchanged.unchanged, policy_writes(kube, namespace)) == (1, ["POST"])

    reconcile_once(make_deps(make_settings(metrics_namespace="monitoring")))
    sources = policies(kube, namespace)[slug]["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in sources
    assert policy_writes(kube, namespace) == ["POST", "PATCH"]

    off = reconcile_once(make_deps(make_settings(network_policy=False)))
    assert (off.failed, policies(kube, namespace)) == (0, {})
    assert set(kube.objects("deployments", namespace)) == {slug}
    assert reconcile_once(make_deps(make_settings(network_policy=False))).unchanged == 1  # nothing left to repair

    reconcile_once(make_deps())
    assert set(policies(kube, namespace)) == {slug}
    MlflowClient().delete_model_version_tag(model_name, "1", "deploy")
    gone = reconcile_once(make_deps())
    assert (gone.undeployed, policies(kube, namespace), kube.objects("deployments", namespace)) == (1, {}, {})


def test_a_deleted_policy_is_put_back_by_the_next_pass(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    register_versions(model_name, iris, tags=production)
    reconcile_once(make_deps())
    kube.delete("apis/networking.k8s.io/v1", namespace, "networkpolicies", slug)

    report = reconcile_once(make_deps())

    assert (report.updated, report.failed) == (1, 0), report.failures
    assert set(policies(kube, namespace)) == {slug}
    assert policy_writes(kube, namespace) == ["POST", "DELETE", "POST"]  # ours, the person's, ours again


def test_a_failed_rollout_after_switching_the_policy_off_keeps_the_policy(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    register_versions(model_name, iris, tags=production)
    reconcile_once(make_deps())
    before = policies(kube, namespace)[slug]["spec"]
    register_versions(model_name, iris, tags=production)
    crashing = crash("the new version crashes")  # its pods only: the old ones keep serving
    kube.set_rollout_policy(lambda template: crashing if (template["metadata"].get("annotations") or {}).get(
        MODEL_VERSION) == "2" else READY)

    report = reconcile_once(make_deps(make_settings(network_policy=False)))

    assert report.failed == 1 and "CrashLoopBackOff" in tags_of(model_name, "2")["deployment_message"]
    assert policies(kube, namespace)[slug]["spec"] == before


def test_a_host_network_ingress_controller_is_admitted_by_its_nodes_cidr_and_prometheus_scrapes_the_pods() -> None:
    """A host-network ingress-nginx reaches pods as node traffic, which no namespace selector matches: ops
    admit the nodes' CIDR (docs/reliability.md, "Network"). Prometheus' kubernetes-pods job finds the pods by
    their scrape annotations, and METRICS_NAMESPACE lets it through."""
    manifests = render(network_policy_extra_sources="cidr:192.168.0.0/24")
    sources = manifests["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "192.168.0.0/24"}} in sources
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in sources
    pod = manifests["Deployment"]["spec"]["template"]
    notes = pod["metadata"]["annotations"]
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert (notes["prometheus.io/scrape"], notes["prometheus.io/path"], notes["prometheus.io/port"]) == (
        "true", "/metrics", str(port))
