"""A candidate's Kubernetes objects: rendered from its own manifests, validated against the official schemas,
and created by the watcher's ServiceAccount (under the shipped Role) beside a live model the pass deployed in the
emulated cluster. With ingress-nginx the live Service never selects the candidate's pods and a second Ingress
carries the canary weight; otherwise the candidate's pods join the one Service in proportion to their count.
The Kubernetes pass runs canaries and shadows: tests/rollout/test_kubernetes_rollout.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, utils

from devstack.models import LoggedModel, register_versions
from model_wrapper.contract.naming import model_slug
from tests.peers import KubernetesPeer, all_ready
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.render.candidate import (
    CANDIDATE_OF,
    NGINX_CANARY,
    NGINX_WEIGHT,
    candidate_manifests,
    candidate_name,
    candidate_replicas,
)
from watcher.render.manifests import Release


@pytest.mark.parametrize(("percent", "live", "expected"), [(10, 1, 1), (50, 2, 2), (20, 8, 2), (90, 1, 9), (0, 3, 1)])
def test_the_replica_ratio_gives_the_candidate_its_share_of_the_pods(percent: int, live: int, expected: int) -> None:
    assert candidate_replicas(percent, live) == expected


def test_the_candidate_name_is_a_dns_label_even_for_the_longest_slug() -> None:
    assert len(candidate_name("m" * 63)) <= 63 and candidate_name("iris") == "iris-candidate"


def watcher_client(kube: KubernetesPeer) -> client.ApiClient:
    """The watcher's ServiceAccount: every request is authorised by cronjob/role.yaml."""
    configuration = client.Configuration()
    configuration.host = kube.url
    configuration.api_key = {"authorization": "the-watcher-service-account"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)


def selected_pods(api: client.ApiClient, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    text = ",".join(f"{k}={v}" for k, v in selector.items())
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=text)
    return [api.sanitize_for_serialization(pod) for pod in pods.items]


def ready(apps: client.AppsV1Api, name: str, namespace: str) -> Any:
    """The Deployment once the controller has its pods ready (bounded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        deployment = apps.read_namespaced_deployment(name, namespace)
        if deployment.status is not None and (deployment.status.ready_replicas or 0) >= deployment.spec.replicas:
            return deployment
        time.sleep(0.1)
    raise AssertionError(f"{name} not ready: {deployment.status}")


@pytest.mark.parametrize("ingress_nginx", [True, False], ids=["ingress-nginx", "replica-ratio"])
def test_the_candidate_objects_are_created_beside_the_live_model_and_split_as_the_cluster_can(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str], ingress_nginx: bool,
) -> None:
    kube.set_rollout_policy(all_ready)
    deps = make_deps(make_settings(ingress_class_name="nginx"))
    register_versions(model_name, iris, tags=production)
    assert reconcile_once(deps).deployed == 1
    slug = model_slug(model_name)
    rendered = deps.renderer.render(Release(model_name, 2, iris.source, iris.run_id, slug))

    manifests = candidate_manifests(rendered, percent=10, live_replicas=1, ingress_nginx=ingress_nginx)
    api = watcher_client(kube)
    for manifest in manifests:
        utils.create_from_dict(api, manifest, namespace=namespace)

    name = candidate_name(slug)
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == (["Deployment", "Ingress", "NetworkPolicy", "Service"] if ingress_nginx else ["Deployment"])
    assert all(m["metadata"]["annotations"][CANDIDATE_OF] == slug for m in manifests)
    apps = client.AppsV1Api(api)
    candidate = ready(apps, name, namespace)
    assert candidate.spec.template.metadata.annotations["service-builder.io/model-version"] == "2"
    live_service = client.CoreV1Api(api).read_namespaced_service(slug, namespace).spec.selector
    behind_live = {p["metadata"]["annotations"]["service-builder.io/model-version"]
                   for p in selected_pods(api, namespace, live_service)}
    live = apps.read_namespaced_deployment(slug, namespace)
    assert live.spec.replicas == 1 and live.metadata.annotations["service-builder.io/model-version"] == "1"
    if ingress_nginx:
        assert behind_live == {"1"}, "the live Service never sends to the candidate: its Ingress does"
        ingress = client.NetworkingV1Api(api).read_namespaced_ingress(name, namespace)
        notes = ingress.metadata.annotations
        assert (notes[NGINX_CANARY], notes[NGINX_WEIGHT]) == ("true", "10")
        assert ingress.spec.rules[0].http.paths[0].path == f"/{slug}/api"
        assert ingress.spec.rules[0].http.paths[0].backend.service.name == name
    else:
        assert behind_live == {"1", "2"}, "the one Service spreads requests over both versions' pods"
