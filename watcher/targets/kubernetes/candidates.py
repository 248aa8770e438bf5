"""The Kubernetes target's candidates: a version on trial runs as its own objects beside the live ones
(`watcher.render.candidate`: `<slug>-candidate`), takes its share of traffic as the cluster can split it, and its
figures are read from its pods' `/metrics` and the live pods'.

Used by `watcher.targets.kubernetes.cluster.KubernetesTarget`, which does the API calls (`Cluster` below); the
objects themselves are rendered and validated by `watcher.render.candidate`. Two splits:

- **ingress-nginx**: the canary Ingress's `canary-weight` annotation is the candidate's percent;
- **replica ratio**: the candidate's pods carry the live Service's selector, so its replica count against the
  live Deployment's is its share.

A shadow (share 0) gets no traffic of its own: the ConfigMap `<slug>-shadow`, which the live pods mount, makes
the live wrapper mirror a sample to the candidate's Service (`model_wrapper.http.shadow`) and count the comparison
on its `/metrics`. A canary bounded by its agreement with live runs it the other way round: its own pods ask the
live version (`watcher.render.candidate.AsksLive`) and count the comparison on theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from watcher.clients.prometheus import Prometheus, from_settings
from watcher.clients.scrape import metrics_text, parse_comparison, parse_metrics
from watcher.config.settings import Settings
from watcher.decide.progressive import Comparison, Figures, WrapperFigures
from watcher.errors import Retryable, RolloutFailed
from watcher.render.candidate import (
    MIRRORED_BY,
    NGINX_WEIGHT,
    TRACK_LABEL,
    AsksLive,
    candidate_manifests,
    candidate_name,
    candidate_replicas,
    candidate_url,
    shadow_config_map,
)
from watcher.render.manifests import MODEL_NAME, MODEL_VERSION, Rendered
from watcher.targets.kubernetes.patch import pointer

log = logging.getLogger(__name__)
APPLY_ORDER = ("NetworkPolicy", "Deployment", "Service", "Ingress")
"""The guard before the pods, the pods before what sends them traffic; removed in reverse (traffic goes first)."""
PodUrl = Callable[[dict[str, Any]], "str | None"]
FiguresOf = Callable[[dict[str, Any], dict[str, dict[str, Any]]], Figures]
"""A rollout's figures from the live Deployment and the candidate's objects (by kind)."""


class Cluster(Protocol):
    """The API calls the candidates make, each with the target's retries, timeouts and Lease check."""

    def create_object(self, manifest: dict[str, Any]) -> None: ...
    def update_object(self, manifest: dict[str, Any], seen: dict[str, Any]) -> None: ...
    def patch_object(self, kind: str, name: str, ops: list[dict[str, Any]]) -> None: ...
    def delete_object(self, kind: str, name: str) -> None: ...
    def pods(self, match: dict[str, str]) -> list[dict[str, Any]]: ...
    def wait_ready(self, rendered: Rendered, timeout: float) -> None: ...


def pod_metrics_base(pod: dict[str, Any]) -> str | None:
    """`http://<podIP>:<containerPort>` of a Ready pod (what a Prometheus pod scrape reads), else None."""
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    containers = (pod.get("spec") or {}).get("containers") or []
    ports = containers[0].get("ports") or [] if containers else []
    if not ready or not status.get("podIP") or not ports:
        return None
    return f"http://{status['podIP']}:{ports[0]['containerPort']}"


class Candidates:
    """The candidates of one namespace; `ingress_nginx` says which split the cluster has."""

    def __init__(self, cluster: Cluster, *, namespace: str, ingress_nginx: bool, pod_url: PodUrl,
                 timeout: float) -> None:
        self._cluster, self._ns, self._nginx, self._pod_url = cluster, namespace, ingress_nginx, pod_url
        self._timeout = timeout

    def begin(self, rendered: Rendered, live: dict[str, Any] | None, earlier: dict[str, dict[str, Any]],
              percent: int, sample: float, *, compares: bool = False) -> None:
        """Create (or turn an earlier candidate into) `rendered`'s candidate with no share yet, wait until its
        Deployment is rolled out, then give it `percent` (0: a shadow, mirrored `sample` of the live requests; a
        canary that `compares` asks live `sample` of its own). A candidate that never gets ready is removed."""
        shadow = percent == 0
        asks = AsksLive(self._ns, _version(live or {}), sample) if compares and not shadow else None
        manifests = candidate_manifests(rendered, percent=0, live_replicas=_replicas(live), ingress_nginx=self._nginx,
                                        shadow=shadow, asks_live=asks)
        mirrored = _annotations(earlier.get("Deployment") or {}).get(MIRRORED_BY)
        if mirrored and not shadow:
            self._cluster.delete_object("ConfigMap", mirrored)
        stale = _stale(earlier, manifests)
        self.discard(stale)
        earlier = {kind: obj for kind, obj in earlier.items() if kind not in stale}
        for manifest in sorted(manifests, key=lambda m: APPLY_ORDER.index(m["kind"])):
            seen = earlier.get(manifest["kind"])
            if seen is None:
                self._cluster.create_object(manifest)
            else:
                self._cluster.update_object(manifest, seen)
        try:
            self._cluster.wait_ready(replace(rendered, manifests=tuple(manifests)), self._timeout)
        except Exception:  # a crash, a timeout or a SIGTERM: no candidate is left behind half started
            self.discard({m["kind"]: m for m in manifests})
            raise
        if shadow:  # written last: the live pods mirror only to a candidate that is ready
            self._cluster.create_object(shadow_config_map(rendered, url=candidate_url(rendered, self._ns),
                                                          version=rendered.release.version, sample=sample))
        else:
            self.split(rendered.deployment["metadata"]["name"], live, percent)

    def split(self, slug: str, live: dict[str, Any] | None, percent: int) -> None:
        """The candidate's share: the canary Ingress's weight, or its pods against the live Deployment's."""
        name = candidate_name(slug)
        if self._nginx:
            path = "/metadata/annotations/" + pointer(NGINX_WEIGHT)
            self._cluster.patch_object("Ingress", name, [{"op": "replace", "path": path, "value": str(percent)}])
        else:
            replicas = candidate_replicas(percent, _replicas(live))
            self._cluster.patch_object("Deployment", name, [{"op": "replace", "path": "/spec/replicas",
                                                             "value": replicas}])
        log.info("%s: the candidate takes %s%% of the traffic (%s)", slug, percent,
                 "ingress-nginx canary weight" if self._nginx else "replica ratio")

    def discard(self, present: dict[str, dict[str, Any]]) -> None:
        """Delete the candidate objects `present` (by kind): what sends it traffic first (the live pods' mirroring
        config, the canary Ingress), its pods after."""
        mirrored = _annotations(present.get("Deployment") or {}).get(MIRRORED_BY)
        if mirrored:
            self._cluster.delete_object("ConfigMap", mirrored)
        for kind in reversed(APPLY_ORDER):
            if kind in present:
                self._cluster.delete_object(kind, present[kind]["metadata"]["name"])

    def figures(self, live: dict[str, Any], present: dict[str, dict[str, Any]]) -> Figures:
        """Both Deployments' prediction figures, each summed over its Ready pods' `/metrics`, and the comparison
        counts of the side that mirrors: the live pods in a shadow, the candidate's in a canary (`present`: its
        objects, by kind). Only that side's: a live pod's counts of an earlier shadow of the same version are not
        this trial's."""
        candidate = present.get("Deployment")
        if candidate is None:  # deleted by hand, or a delete cut short: the candidate goes, the live one serves
            raise RolloutFailed("the candidate's Deployment is gone; nothing to judge")
        live_pods = [pod for pod in self._cluster.pods(_selector(live))
                     if (pod["metadata"].get("labels") or {}).get(TRACK_LABEL) != "candidate"]
        version = _version(candidate)
        live_texts, candidate_texts = self._texts(live_pods), self._texts(self._cluster.pods(_selector(candidate)))
        return Figures(version, _version(live), summed([parse_metrics(text) for text in candidate_texts]),
                       summed([parse_metrics(text) for text in live_texts]),
                       added([parse_comparison(text, str(version)) for text in
                              (live_texts if _annotations(candidate).get(MIRRORED_BY) else candidate_texts)]))

    def _texts(self, pods: list[dict[str, Any]]) -> list[str]:
        found = []
        for pod in pods:
            url = self._pod_url(pod)
            if url is None:
                continue  # not Ready yet, or going: the pods that serve are the ones that count
            try:
                found.append(metrics_text(url))
            except Retryable as e:
                log.warning("pod %s: %s", pod["metadata"]["name"], e)
        return found


def _stale(earlier: dict[str, dict[str, Any]], manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """An earlier candidate's objects the new one cannot reuse: kinds it does not have, and a Deployment whose
    selector differs (another split or strategy; a Deployment's selector is immutable)."""
    new = {m["kind"]: m for m in manifests}
    return {kind: obj for kind, obj in earlier.items()
            if kind not in new or (kind == "Deployment" and _selector(obj) != _selector(new[kind]))}


def added(comparisons: list[Comparison]) -> Comparison:
    """The comparison counts of the pods that mirror, added up."""
    return Comparison(sum(c.compared for c in comparisons), sum(c.agreed for c in comparisons),
                      sum(c.abs_diff_sum for c in comparisons), sum(c.abs_diff_count for c in comparisons))


def summed(figures: list[WrapperFigures]) -> WrapperFigures:
    """One Deployment's figures from its pods': counts add up, and so do the histograms' buckets."""
    buckets: dict[float, float] = {}
    for one in figures:
        for upper, count in one.buckets:
            buckets[upper] = buckets.get(upper, 0.0) + count
    return WrapperFigures(sum(f.requests for f in figures), sum(f.errors for f in figures),
                          tuple(sorted(buckets.items())))


def _replicas(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("spec") or {}).get("replicas") or 1)


def _selector(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _version(deployment: dict[str, Any]) -> int:
    text = _annotations(deployment).get(MODEL_VERSION, "")
    return int(text) if text.isdigit() else 0


def figures_source(settings: Settings, scrape: FiguresOf) -> FiguresOf:
    """Where a look reads the figures: the pods' own `/metrics` (`scrape`), or Prometheus with PROMETHEUS_URL."""
    source = from_settings(settings)
    return scrape if source is None else partial(prometheus_figures, source)


def prometheus_figures(source: Prometheus, live: dict[str, Any], present: dict[str, dict[str, Any]]) -> Figures:
    """`Candidates.figures` as Prometheus has them (`PROMETHEUS_URL`): the series of the model's two versions, told
    apart by the `version` label each wrapper puts on its own, whichever Deployment's pods they came from."""
    candidate = present.get("Deployment")
    if candidate is None:
        raise RolloutFailed("the candidate's Deployment is gone; nothing to judge")
    model = ((live.get("metadata") or {}).get("annotations") or {}).get(MODEL_NAME, "")
    mirror = _version(live) if _annotations(candidate).get(MIRRORED_BY) else _version(candidate)
    return source.figures(model, _version(candidate), _version(live), mirror=mirror)
