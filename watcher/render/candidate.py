"""The Kubernetes objects of a candidate (a `rollout` section's version on trial beside the live one), derived from
the candidate's own rendered manifests and validated like them.

Two ways to split live traffic, after what clusters have:

- **ingress-nginx** (an Ingress class served by ingress-nginx): a second Deployment and Service named
  `<slug>-candidate`, and a second Ingress on the same host and path with `nginx.ingress.kubernetes.io/canary:
  "true"` and `canary-weight: "<percent>"` (ingress-nginx's canary annotations; weight 0 with a shadow, whose
  copies are the live wrapper's to send);
- **replica ratio** (any other controller): the second Deployment only; its pods carry the live Service's
  selector labels, so the one Service spreads requests by pod count, and the candidate gets `percent`% of the
  pods (at least one).

The second Deployment's own selector adds `service-builder.io/track: candidate`, so its ReplicaSets never match
what the live Deployment's controller claims by ownership. A **shadow** has a Deployment, Service and
NetworkPolicy of its own (admitting the live pods, which mirror to it) and no Ingress: it answers no caller; what
the live wrapper mirrors to it is the ConfigMap `<slug>-shadow` (`shadow_config_map`), which every model pod
mounts (optional) as its SHADOW_CONFIG.

A canary bounded by its agreement with live (`asks_live`) turns the mirror round: the candidate's Deployment alone
gets `MIRROR_TO_LIVE` (the address of a Service that selects the live pods only) and `MIRROR_SAMPLE`, so its
wrapper asks the live version a sample of the requests it answers and counts the comparison on its own `/metrics`.
Rendered config rather than a ConfigMap: nothing changes it during the trial, it starts with the pods, and it goes
with the candidate's Deployment (a promotion applies the version's own manifests, which never have it), so no
pass can leave a mirror behind. With ingress-nginx the live Service selects the live pods alone; in a replica
ratio it selects the candidate's too, so the candidate gets a Service of its own that selects the live version's
pods by their version label. Its NetworkPolicy then also selects the live pods, admitting the candidate's (policies
add up: the live pods admit what they did, and the candidate). Pure: called with plain data by the Kubernetes
target's candidates (`watcher.targets.kubernetes.candidates`); `docs/lifecycle.md` says what runs where.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any

from watcher.render.manifests import (
    ANNOTATION,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    Rendered,
    shadow_name,
    validate_manifest,
)

TRACK_LABEL = ANNOTATION + "track"
CANDIDATE_OF = ANNOTATION + "candidate-of"
"""On each candidate object: the slug whose live version it is on trial beside."""
NGINX_CANARY = "nginx.ingress.kubernetes.io/canary"
NGINX_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"
SHADOW_VOLUME = "shadow"
SHADOW_KEY = "shadow.json"
VERSION_LABEL = "app.kubernetes.io/version"
MIRRORED_BY = ANNOTATION + "mirrored-by"
"""On a shadow's candidate Deployment: the ConfigMap that makes the live pods mirror to it (removed first)."""


def candidate_name(slug: str) -> str:
    """`<slug>-candidate`, within the 63 characters a Service name (a DNS label) may have."""
    return f"{slug[:53].rstrip('-')}-candidate"


@dataclass(frozen=True)
class AsksLive:
    """A canary whose analysis compares its answers with live's: where, and how much of them."""

    namespace: str
    live_version: int
    sample: float


def candidate_manifests(rendered: Rendered, *, percent: int, live_replicas: int, ingress_nginx: bool,
                        shadow: bool = False, asks_live: AsksLive | None = None) -> list[dict[str, Any]]:
    """The candidate's Deployment (and, with ingress-nginx, its Service, canary Ingress and NetworkPolicy; for a
    shadow, its Service and NetworkPolicy; a replica ratio's that asks live, the Service to the live pods and the
    NetworkPolicy), validated."""
    slug = rendered.deployment["metadata"]["name"]
    deployment = _deployment(rendered.deployment, slug, keeps_live_selector=not (ingress_nginx or shadow))
    if shadow:
        deployment["metadata"]["annotations"][MIRRORED_BY] = shadow_name(slug)
        manifests = [deployment, _service(rendered, slug), *_network_policy(rendered, slug, mirrored=True)]
    elif ingress_nginx:
        manifests = [deployment, _service(rendered, slug), _ingress(rendered, slug, percent),
                     *_network_policy(rendered, slug, asked_by=deployment if asks_live else None)]
    else:
        deployment["spec"]["replicas"] = candidate_replicas(percent, live_replicas)
        manifests = [deployment]
        if asks_live is not None:
            manifests += [_service(rendered, slug, live_version=asks_live.live_version),
                          *_network_policy(rendered, slug, asked_by=deployment)]
    if asks_live is not None and not shadow:
        _ask_live(deployment, live_url(rendered, asks_live.namespace, ingress_nginx=ingress_nginx),
                  asks_live.sample)
    for manifest in manifests:
        validate_manifest(manifest)
    return manifests


def live_url(rendered: Rendered, namespace: str, *, ingress_nginx: bool) -> str:
    """The address of the live pods alone, as a canary candidate asks them: the live Service with ingress-nginx
    (its selector never matches the candidate's pods), else the candidate's own Service to them."""
    service = next(m for m in rendered.manifests if m["kind"] == "Service")
    slug = rendered.deployment["metadata"]["name"]
    name = slug if ingress_nginx else candidate_name(slug)
    return f"http://{name}.{namespace}.svc:{service['spec']['ports'][0]['port']}"


def candidate_url(rendered: Rendered, namespace: str) -> str:
    """The candidate Service's in-cluster address, as the live pods reach it."""
    service = next(m for m in rendered.manifests if m["kind"] == "Service")
    name = candidate_name(rendered.deployment["metadata"]["name"])
    return f"http://{name}.{namespace}.svc:{service['spec']['ports'][0]['port']}"


def shadow_config_map(rendered: Rendered, *, url: str, version: int, sample: float) -> dict[str, Any]:
    """What the live pods mirror to: the candidate's address, version and the share of requests, validated."""
    slug = rendered.deployment["metadata"]["name"]
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": shadow_name(slug), "namespace": rendered.deployment["metadata"]["namespace"],
                           "labels": {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: slug}},
              "data": {SHADOW_KEY: json.dumps({"candidate": url, "version": str(version), "sample": sample})}}
    _mark(config, shadow_name(slug), slug)
    validate_manifest(config)
    return config


def candidate_replicas(percent: int, live_replicas: int) -> int:
    """Pods for the candidate so that it holds about `percent`% of the pods behind the one Service."""
    if percent <= 0:
        return 1
    return max(1, math.ceil(live_replicas * percent / (100 - percent)))


def _deployment(live: dict[str, Any], slug: str, *, keeps_live_selector: bool) -> dict[str, Any]:
    deployment = copy.deepcopy(live)
    name = candidate_name(slug)
    _mark(deployment, name, slug)
    selector = dict(deployment["spec"]["selector"]["matchLabels"])
    if not keeps_live_selector:  # its own Service selects it; the live one must not
        selector[INSTANCE_LABEL] = name
    selector[TRACK_LABEL] = "candidate"
    deployment["spec"]["selector"]["matchLabels"] = selector
    template = deployment["spec"]["template"]["metadata"]
    template["labels"] = {**template.get("labels", {}), **selector}
    pod = deployment["spec"]["template"]["spec"]  # the candidate never mirrors (to itself) what it is sent
    pod["volumes"] = [v for v in pod.get("volumes", []) if v["name"] != SHADOW_VOLUME]
    for container in pod["containers"]:
        container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m["name"] != SHADOW_VOLUME]
    return deployment


def _service(rendered: Rendered, slug: str, *, live_version: int | None = None) -> dict[str, Any]:
    """The candidate's Service: to its own pods, or (`live_version`) to the live version's pods alone."""
    service = copy.deepcopy(next(m for m in rendered.manifests if m["kind"] == "Service"))
    name = candidate_name(slug)
    _mark(service, name, slug)
    if live_version is None:
        service["spec"]["selector"] = {**service["spec"]["selector"], INSTANCE_LABEL: name, TRACK_LABEL: "candidate"}
    else:  # every model pod carries its version as this label (the templates' `labels`)
        service["spec"]["selector"] = {**service["spec"]["selector"], VERSION_LABEL: str(live_version)}
    return service


def _ask_live(deployment: dict[str, Any], url: str, sample: float) -> None:
    """The candidate's wrapper asks `url` a `sample` of the prediction requests it answers, and compares."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [*container.get("env", []), {"name": "MIRROR_TO_LIVE", "value": url},
                        {"name": "MIRROR_SAMPLE", "value": repr(float(sample))}]


def _ingress(rendered: Rendered, slug: str, percent: int) -> dict[str, Any]:
    ingress = copy.deepcopy(next(m for m in rendered.manifests if m["kind"] == "Ingress"))
    name = candidate_name(slug)
    _mark(ingress, name, slug)
    ingress["metadata"]["annotations"].update({NGINX_CANARY: "true", NGINX_WEIGHT: str(percent)})
    ingress["spec"].pop("tls", None)  # ingress-nginx takes TLS from the main Ingress of the host
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            path["backend"]["service"]["name"] = name
    return ingress


def _network_policy(rendered: Rendered, slug: str, *, mirrored: bool = False,
                    asked_by: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The live pods' NetworkPolicy for the candidate's pods, which the live one's selector does not pick; a
    shadow's also admits the live pods, which mirror to it; a canary's that asks live (`asked_by`: its Deployment)
    also selects the live pods and admits the candidate's."""
    policy = next((m for m in rendered.manifests if m["kind"] == "NetworkPolicy"), None)
    if policy is None:
        return []
    policy = copy.deepcopy(policy)
    name = candidate_name(slug)
    _mark(policy, name, slug)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    policy["spec"]["podSelector"]["matchLabels"] = {**selector, INSTANCE_LABEL: name, TRACK_LABEL: "candidate"}
    if mirrored and policy["spec"].get("ingress"):
        live = {"podSelector": {"matchLabels": {INSTANCE_LABEL: slug, MANAGED_BY_LABEL: MANAGED_BY}}}
        policy["spec"]["ingress"][0]["from"].append(live)
    if asked_by is not None and policy["spec"].get("ingress"):
        asking = dict(asked_by["spec"]["selector"]["matchLabels"])
        instances = sorted({slug, asking[INSTANCE_LABEL]})
        policy["spec"]["podSelector"] = {"matchLabels": {MANAGED_BY_LABEL: MANAGED_BY}, "matchExpressions": [
            {"key": INSTANCE_LABEL, "operator": "In", "values": instances}]}
        policy["spec"]["ingress"][0]["from"].append({"podSelector": {"matchLabels": asking}})
    return [policy]


def _mark(manifest: dict[str, Any], name: str, slug: str) -> None:
    metadata = manifest["metadata"]
    metadata["name"] = name
    metadata["labels"] = {**metadata.get("labels", {}), TRACK_LABEL: "candidate"}
    metadata["annotations"] = {**metadata.get("annotations", {}), CANDIDATE_OF: slug}
