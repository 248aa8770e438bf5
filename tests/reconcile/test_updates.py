"""Updates as `kubectl apply` makes them: what others add to our objects survives, what we stop rendering
goes, and a pass with nothing to do writes nothing, against a control plane that defaults pod templates as
the API server does (tests/pod_defaults.py), so a template read back never equals the one sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devstack.models import LoggedModel, register_versions
from model_wrapper.contract.naming import model_slug
from tests.peers import KubernetesPeer
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

TOLERATION = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}


def template_spec(kube: KubernetesPeer, namespace: str, slug: str) -> dict[str, Any]:
    return kube.objects("deployments", namespace)[slug]["spec"]["template"]["spec"]


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in spec["containers"][0]["env"]}


def test_what_ops_add_to_a_model_survives_the_next_version(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    register_versions(model_name, iris, tags=production)
    assert reconcile_once(make_deps()).deployed == 1
    # Ops schedule the model on tainted nodes, pull through a registry secret and give it scratch space.
    kube.patch("apis/apps/v1", namespace, "deployments", slug, [
        {"op": "add", "path": "/spec/template/spec/tolerations", "value": [TOLERATION]},
        {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"pool": "models"}},
        {"op": "add", "path": "/spec/template/spec/imagePullSecrets", "value": [{"name": "registry"}]},
        {"op": "add", "path": "/spec/template/spec/containers/0/resources/limits/ephemeral-storage", "value": "4Gi"},
        {"op": "add", "path": "/metadata/labels/team", "value": "risk"}])

    register_versions(model_name, iris, tags=production)
    assert reconcile_once(make_deps()).updated == 1

    spec = template_spec(kube, namespace, slug)
    assert env_of(spec)["MODEL_VERSION"] == "2"
    assert spec["tolerations"] == [TOLERATION] and spec["nodeSelector"] == {"pool": "models"}
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "4Gi"
    assert kube.objects("deployments", namespace)[slug]["metadata"]["labels"]["team"] == "risk"
    before = len(kube.writes(namespace))
    assert reconcile_once(make_deps()).unchanged == 1
    assert kube.writes(namespace)[before:] == [], "a pass with nothing to do writes nothing"


def test_what_the_watcher_stops_rendering_is_removed(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    register_versions(model_name, iris, tags=production)
    tls = make_settings(tls_secret_name="models-tls", ingress_class_name="internal")
    assert reconcile_once(make_deps(tls)).deployed == 1
    assert kube.objects("ingresses", namespace)[slug]["spec"]["tls"][0]["secretName"] == "models-tls"

    assert reconcile_once(make_deps()).updated == 1  # ops turned TLS and the class setting off

    spec = kube.objects("ingresses", namespace)[slug]["spec"]
    assert "tls" not in spec and "ingressClassName" not in spec
    before = len(kube.writes(namespace))
    assert reconcile_once(make_deps()).unchanged == 1
    assert kube.writes(namespace)[before:] == []


def test_an_env_variable_and_volume_no_longer_rendered_go_and_the_variable_ops_added_stays(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    register_versions(model_name, iris, tags=production)
    assert reconcile_once(make_deps(make_settings(api_keys_secret_name="model-keys"))).deployed == 1
    assert "API_KEYS_FILE" in env_of(template_spec(kube, namespace, slug))
    kube.patch("apis/apps/v1", namespace, "deployments", slug, [
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "HTTP_PROXY",
                                                                                  "value": "http://proxy:3128"}}])

    assert reconcile_once(make_deps()).updated == 1

    spec = template_spec(kube, namespace, slug)
    assert "API_KEYS_FILE" not in env_of(spec) and env_of(spec)["HTTP_PROXY"] == "http://proxy:3128"
    assert not [v for v in spec["volumes"] if (v.get("secret") or {}).get("secretName") == "model-keys"]
    assert len(spec["containers"][0]["volumeMounts"]) == len(spec["volumes"])
