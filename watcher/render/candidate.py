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
mounts (optional) as its SHADOW_CONFIG. Pure: called with plain data by the Kubernetes
target's candidates (`watcher.targets.kubernetes.candidates`); `docs/lifecycle.md` says what runs where.
"""

from __future__ import annotations

import copy
import json
import math
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
MIRRORED_BY = ANNOTATION + "mirrored-by"
"""On a shadow's candidate Deployment: the ConfigMap that makes the live pods mirror to it (removed first)."""


def candidate_name(slug: str) -> str:
    """`<slug>-candidate`, within the 63 characters a Service name (a DNS label) may have."""
    return f"{slug[:53].rstrip('-')}-candidate"


def candidate_manifests(rendered: Rendered, *, percent: int, live_replicas: int, ingress_nginx: bool,
                        shadow: bool = False) -> list[dict[str, Any]]:
    """The candidate's Deployment (and, with ingress-nginx, its Service, canary Ingress and NetworkPolicy; for a
    shadow, its Service and NetworkPolicy), validated."""
    slug = rendered.deployment["metadata"]["name"]
    deployment = _deployment(rendered.deployment, slug, keeps_live_selector=not (ingress_nginx or shadow))
    if shadow:
        deployment["metadata"]["annotations"][MIRRORED_BY] = shadow_name(slug)
        manifests = [deployment, _service(rendered, slug), *_network_policy(rendered, slug, mirrored=True)]
    elif ingress_nginx:
        manifests = [deployment, _service(rendered, slug), _ingress(rendered, slug, percent),
                     *_network_policy(rendered, slug)]
    else:
        deployment["spec"]["replicas"] = candidate_replicas(percent, live_replicas)
        manifests = [deployment]
    for manifest in manifests:
        validate_manifest(manifest)
    return manifests


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


def _service(rendered: Rendered, slug: str) -> dict[str, Any]:
    service = copy.deepcopy(next(m for m in rendered.manifests if m["kind"] == "Service"))
    name = candidate_name(slug)
    _mark(service, name, slug)
    service["spec"]["selector"] = {**service["spec"]["selector"], INSTANCE_LABEL: name, TRACK_LABEL: "candidate"}
    return service


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


def _network_policy(rendered: Rendered, slug: str, *, mirrored: bool = False) -> list[dict[str, Any]]:
    """The live pods' NetworkPolicy for the candidate's pods, which the live one's selector does not pick; a
    shadow's also admits the live pods, which mirror to it."""
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
    return [policy]


def _mark(manifest: dict[str, Any], name: str, slug: str) -> None:
    metadata = manifest["metadata"]
    metadata["name"] = name
    metadata["labels"] = {**metadata.get("labels", {}), TRACK_LABEL: "candidate"}
    metadata["annotations"] = {**metadata.get("annotations", {}), CANDIDATE_OF: slug}
