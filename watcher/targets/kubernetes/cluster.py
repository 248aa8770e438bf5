"""Step 5 of the pass on Kubernetes: observe, apply (create-or-patch), wait for rollout, roll back, remove.

With `jobs` and `lease` beside it, the only watcher code that calls the Kubernetes API (the renderer and the
settings use only the client's pure quantity parser). One paged list per managed kind (`KINDS`: adding a
kind is one line there) observes the whole namespace; objects without the managed-by label are
reported, never touched. Updates are kubectl-apply three-way merges (`patch.py`) sent as JSON patches,
so what admission, controllers and people add to our objects survives and what we stop
rendering goes; every request has a connect and read timeout.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from watcher.config.settings import Settings
from watcher.decide import rollout
from watcher.decide.progressive import Figures
from watcher.errors import Blocked, PassAborted, Retryable, RolloutFailed
from watcher.render.manifests import (
    EVALUATES_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_VERSION,
    OPTIONAL_TEMPLATES,
    ROLLBACK_TO,
    SPEC_HASH,
    Rendered,
)
from watcher.targets.kubernetes.access import api_client, translate
from watcher.targets.kubernetes.candidates import Candidates, PodUrl, figures_source, pod_metrics_base
from watcher.targets.kubernetes.jobs import JobRunner
from watcher.targets.kubernetes.lease import Lease
from watcher.targets.kubernetes.owned import dropped, owned_manifests, remembering
from watcher.targets.kubernetes.patch import last_applied, ours, pointer, three_way_patch, with_last_applied
from watcher.targets.kubernetes.snapshot import Snapshot, managed

log = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT = (5, 30)
"""(connect, read) seconds for every request, set on the client itself so no call can go without; the read
timeout is K8S_REQUEST_TIMEOUT_SECONDS."""
LEASE_SECONDS = 60  # renewed while held; after a crash, the next CronJob run (2 min later) finds it expired
PAGE_SIZE = 500
WRITES = frozenset({"create", "patch", "delete"})
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Kind:
    """How the client reaches one kind: its API class, the method suffix, and the resource (for RBAC messages)."""

    api: Callable[[client.ApiClient], Any]
    method: str
    resource: str


KINDS: dict[str, Kind] = {
    # First and so removed last: a model's pods never run without the policy that guards them.
    "NetworkPolicy": Kind(client.NetworkingV1Api, "namespaced_network_policy", "networkpolicies"),
    "Deployment": Kind(client.AppsV1Api, "namespaced_deployment", "deployments"),
    "Service": Kind(client.CoreV1Api, "namespaced_service", "services"),
    "Ingress": Kind(client.NetworkingV1Api, "namespaced_ingress", "ingresses"),
    # Only for some models (watcher.render.manifests.OPTIONAL_TEMPLATES): autoscaled ones, and those with 2+ replicas.
    "HorizontalPodAutoscaler": Kind(client.AutoscalingV2Api, "namespaced_horizontal_pod_autoscaler",
                                    "horizontalpodautoscalers"),
    "PodDisruptionBudget": Kind(client.PolicyV1Api, "namespaced_pod_disruption_budget", "poddisruptionbudgets"),
}
"""The managed kinds, in the order they are applied (removed in reverse)."""
UNOBSERVED = {"ConfigMap": Kind(client.CoreV1Api, "namespaced_config_map", "configmaps")}
"""Kinds written (a shadow's mirroring config) but never listed: their names follow from the objects observed."""
_OTHER_RESOURCES = {"Pod": "pods", "Lease": "leases", "Job": "jobs"}
DROPPED_FIRST = ("HorizontalPodAutoscaler",)
"""Kinds a release that drops them deletes before its Deployment patch, not after the rollout: while an HPA
exists, its controller rescales the Deployment into [minReplicas, maxReplicas] (horizontal.go), undoing the
fixed count the release sets."""


class KubernetesTarget:
    """Runs models as Deployment + Service + Ingress in one namespace, and a version on trial as its candidate
    objects beside them (`candidates`). `pod_url` is where a pod's `/metrics` are read (tests point it at real
    wrapper processes)."""

    candidate_apart = True  # begin_rollout starts a candidate as objects of its own; apply is for the live ones

    def __init__(self, settings: Settings, api: client.ApiClient | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 pod_url: PodUrl = pod_metrics_base) -> None:
        self._settings = settings
        self._ns = settings.k8s_name_space
        self._api = api or api_client(settings)
        self._timeout = (TIMEOUT[0], settings.k8s_request_timeout_seconds)
        self._apis = {kind: spec.api(self._api) for kind, spec in (KINDS | UNOBSERVED).items()}
        self._core = client.CoreV1Api(self._api)
        self._sleep = sleep
        self._clock = clock
        self._lease = Lease(client.CoordinationV1Api(self._api), self._ns, settings.lease_name,
                            duration=LEASE_SECONDS, monotonic=clock, sleep=sleep)
        self._jobs = JobRunner(client.BatchV1Api(self._api), self._core, self._ns, call=self._call,
                               sleep=self._sleep, evaluates_label=EVALUATES_LABEL)
        self._candidates = Candidates(self, namespace=self._ns, ingress_nginx=settings.splits_by_ingress_nginx,
                                      pod_url=pod_url, timeout=settings.rollout_timeout_seconds)
        self._figures = figures_source(settings, self._candidates.figures)

    # --- observe ------------------------------------------------------------------------

    def observe(self) -> Snapshot:
        snapshot = Snapshot()
        for kind in KINDS:
            try:
                items = self._list(kind, partial(self._method("list", kind), self._ns))
            except Retryable as e:
                raise PassAborted(f"Kubernetes API unreachable: {e}") from e
            for obj in items:
                snapshot.objects[(kind, obj["metadata"]["name"])] = obj
        return snapshot

    def _list(self, kind: str, list_fn: Callable[..., Any], **query: Any) -> list[dict[str, Any]]:
        """Every item, a page (`limit`/`continue`) at a time: one namespace may hold thousands of objects.
        Read as the JSON sent: the client's models would cost ~1 ms an object to build and undo."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            answer = self._call("list", kind, partial(list_fn, limit=PAGE_SIZE, _continue=token,
                                                      _preload_content=False, **query))
            try:
                page = json.loads(answer.data)
            except ValueError as e:
                raise PassAborted(f"Kubernetes API answered the {kind} list with something not JSON: {e}") from e
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    # --- apply ----------------------------------------------------------------------------

    def apply(self, rendered: Rendered, snapshot: Snapshot) -> None:
        for kind, obj in dropped(rendered, snapshot, DROPPED_FIRST):
            self._call("delete", kind, partial(self._delete, kind, obj["metadata"]["name"]))
        # The NetworkPolicy first (KINDS order): a model's pods never run unguarded.
        for manifest, owned in zip(_in_apply_order(rendered.manifests), _in_apply_order(owned_manifests(rendered)),
                                   strict=True):
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            existing = snapshot.objects.get((kind, name))
            if existing is None:
                self._call("create", kind, partial(self._create, manifest, owned))
            elif not managed(existing):
                raise Blocked(f"{kind} {name!r} exists and is not managed by Service Builder")
            elif (existing["metadata"].get("annotations") or {}).get(SPEC_HASH) != rendered.spec_hash:
                self._update(remembering(owned, existing), existing)

    def wait_ready(self, rendered: Rendered, timeout: float) -> None:
        """Block until the Deployment's template is rolled out as `kubectl rollout status` says, or raise.

        Slow is not failed: `timeout` counts from the last progress (a change in observed generation or in
        updated, ready or available pods). Failed for good (RolloutFailed): the new pods crash-loop with evidence
        that the version is at fault (the wrapper's verdict, or the same crash after a restart: `rollout.pod_fault`).
        Failed for now (Blocked, retried every pass): a crash without that evidence, an image that cannot be
        pulled, a missing Secret. Failed for now (Retryable): no progress for `timeout`, or
        ProgressDeadlineExceeded with no fault in sight; the next pass tries again."""
        name = rendered.deployment["metadata"]["name"]
        version = (rendered.deployment["metadata"].get("annotations") or {}).get(MODEL_VERSION)
        mark, since, polls = None, self._clock(), 0
        crashes: dict[str, rollout.Termination] = {}
        while True:
            deployment = self._read("Deployment", name)
            verdict = rollout.rollout_status(deployment)
            if verdict.done:
                return
            if rollout.progress_mark(deployment) != mark:
                mark, since = rollout.progress_mark(deployment), self._clock()
            polls += 1
            stalled = self._clock() - since >= timeout
            if verdict.timed_out or stalled or polls % 3 == 0:
                pods = self._new_pods(deployment, version)
                if verdict.timed_out and rollout.stale_deadline(deployment, pods):
                    verdict = replace(verdict, timed_out=False)
                fault = rollout.pod_fault(pods, crashes)
                crashes = rollout.remember(crashes, pods)
                if fault is not None and fault.version_fault:
                    raise RolloutFailed(f"the new pods cannot run: {fault}")
                if fault is not None and (verdict.timed_out or stalled):
                    raise Blocked(f"the new pods cannot start: {fault}; {fault.advice}")
                if verdict.timed_out or stalled:
                    waiting = rollout.waiting_reasons(pods)
                    why = "progress deadline exceeded" if verdict.timed_out else f"no progress for {timeout:.0f}s"
                    raise Retryable(f"rollout not finished, {why}" + (f" (pods: {waiting})" if waiting else "") +
                                    f"; {verdict.message.rstrip('.')}; will retry")
            self._sleep(POLL_SECONDS)

    def roll_back(self, rendered: Rendered, snapshot: Snapshot) -> None:
        """Put back what ran before this release (our paths only); remove what did not exist before, in the
        reverse of the order applied: the NetworkPolicy goes last, so no pod is ever left unguarded."""
        for manifest in reversed(_in_apply_order(owned_manifests(rendered))):
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            previous = snapshot.objects.get((kind, name))
            if previous is None:
                self._call("delete", kind, partial(self._delete, kind, name), attempts=6)
            else:  # what was applied to it then, re-applied over what it is now
                before = last_applied(previous) or ours(previous, manifest)
                self._update({**before, "kind": kind}, None, attempts=6)
        for kind, obj in dropped(rendered, snapshot, DROPPED_FIRST):  # the autoscaler apply deleted comes back
            before = last_applied(obj) or {"apiVersion": "autoscaling/v2", **ours(obj, {**obj, "kind": kind})}
            self._call("create", kind, partial(self._create, before), attempts=6)
        if (rendered.deployment["kind"], rendered.deployment["metadata"]["name"]) in snapshot.objects:
            self._forget_rollback(rendered.deployment["metadata"]["name"])

    def _forget_rollback(self, name: str) -> None:
        current = self._read("Deployment", name)
        if ROLLBACK_TO in (current["metadata"].get("annotations") or {}):
            remove = [{"op": "remove", "path": "/metadata/annotations/" + pointer(ROLLBACK_TO)}]
            self._call("patch", "Deployment", partial(self._method("patch", "Deployment"), name, self._ns, remove),
                       attempts=6)

    def evaluate(self, job: dict[str, Any], timeout: float) -> str:
        """Run the evaluation Job before the Deployment is touched; its pod's termination message."""
        return self._jobs.run(job, timeout)

    def finish(self, rendered: Rendered, snapshot: Snapshot) -> None:
        """The rolling update retired the old pods; an autoscaler or budget the release no longer has goes now
        (after the rollout, so a failed one is rolled back to what it had), and so does the note of what to roll
        back to."""
        name = rendered.deployment["metadata"]["name"]
        later = tuple(kind for kind in OPTIONAL_TEMPLATES if kind not in DROPPED_FIRST)
        for kind, _ in dropped(rendered, snapshot, later):
            self._call("delete", kind, partial(self._delete, kind, name))
        self._forget_rollback(name)
        self._candidates.discard(snapshot.candidate(name))  # a version on trial gave way to this one

    def remove(self, slug: str, snapshot: Snapshot) -> None:
        self._candidates.discard(snapshot.candidate(slug))  # first: nothing sends traffic to what goes
        for kind in reversed(KINDS):
            obj = snapshot.objects.get((kind, slug))
            if obj is not None and managed(obj):
                self._call("delete", kind, partial(self._delete, kind, slug))

    # --- a version on trial beside the live one (watcher.reconcile.progressive) ----------------

    def begin_rollout(self, rendered: Rendered, snapshot: Snapshot, percent: int, sample: float, *,
                      compares: bool = False) -> None:
        slug = rendered.deployment["metadata"]["name"]
        self._candidates.begin(rendered, snapshot.objects.get(("Deployment", slug)), snapshot.candidate(slug),
                               percent, sample, compares=compares)

    def split(self, slug: str, snapshot: Snapshot, percent: int, sample: float) -> None:
        self._candidates.split(slug, snapshot.objects.get(("Deployment", slug)), percent)

    def rollout_figures(self, slug: str, snapshot: Snapshot) -> Figures:
        return self._figures(snapshot.objects[("Deployment", slug)], snapshot.candidate(slug))

    def promote(self, slug: str, snapshot: Snapshot, rendered: Rendered) -> None:
        """The live objects become the candidate's version (a surge rollout: the old pods serve until the new
        ones are Ready, and the candidate's keep their share meanwhile); then the candidate's objects go."""
        self.apply(rendered, snapshot)
        try:
            self.wait_ready(rendered, self._settings.rollout_timeout_seconds)
        except Exception:
            self.roll_back(rendered, snapshot)
            raise
        self.finish(rendered, snapshot)

    def discard_candidate(self, slug: str, snapshot: Snapshot) -> None:
        self._candidates.discard(snapshot.candidate(slug))

    # --- for the candidates (candidates.Cluster) ------------------------------------------------

    def create_object(self, manifest: dict[str, Any]) -> None:
        self._call("create", manifest["kind"], partial(self._create, manifest))

    def update_object(self, manifest: dict[str, Any], seen: dict[str, Any]) -> None:
        self._update(manifest, seen)

    def patch_object(self, kind: str, name: str, ops: list[dict[str, Any]]) -> None:
        self._call("patch", kind, partial(self._method("patch", kind), name, self._ns, ops))

    def delete_object(self, kind: str, name: str) -> None:
        self._call("delete", kind, partial(self._delete, kind, name))

    def pods(self, match: dict[str, str]) -> list[dict[str, Any]]:  # one paged list, by label selector
        selector = ",".join(f"{key}={value}" for key, value in sorted(match.items()))
        pods = self._list("Pod", partial(self._core.list_namespaced_pod, _request_timeout=self._timeout),
                          namespace=self._ns, label_selector=selector)
        return [pod for pod in pods if all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in match.items())]

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._lease.held():
            yield

    def endpoint(self, slug: str) -> str:
        return f"{self._settings.endpoint_scheme}://{self._settings.service_builder_host_name}/{slug}/api/"

    def smoke_base(self, slug: str) -> str | None:
        """The in-cluster Service address, when the watcher runs inside the cluster (or is told to try)."""
        if self._settings.smoke_test == "off":
            return None
        in_cluster = config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ
        if self._settings.smoke_test == "on" or in_cluster:
            return f"http://{slug}.{self._ns}.svc/{slug}/api/"
        return None

    # --- plumbing ---------------------------------------------------------------------------

    def _method(self, verb: str, kind: str) -> Callable[..., Any]:
        """The client's call for `verb` on `kind`, with this target's (connect, read) timeout on every request."""
        return partial(getattr(self._apis[kind], f"{verb}_{(KINDS | UNOBSERVED)[kind].method}"),
                       _request_timeout=self._timeout)

    def _read(self, kind: str, name: str) -> dict[str, Any]:
        obj = self._call("get", kind, partial(self._method("read", kind), name, self._ns))
        return self._api.sanitize_for_serialization(obj)

    def _create(self, manifest: dict[str, Any], owned: dict[str, Any] | None = None) -> Any:
        """Create `manifest`, noting `owned` (the paths we keep setting, by default all) as what we applied."""
        kind = manifest["kind"]
        noted = with_last_applied(owned or manifest)["metadata"]["annotations"]
        body = {**manifest, "metadata": {**manifest["metadata"], "annotations": noted}}
        try:
            return self._method("create", kind)(self._ns, body)
        except ApiException as e:
            if e.status != 409:
                raise
        # It exists after all: an earlier try whose answer was lost (a 5xx or timeout after the write)
        # created it. Adopt it, but only if it carries our label: never take over someone else's object.
        current = self._read(kind, manifest["metadata"]["name"])
        return self._patch(owned or manifest, current, ours_only=True)

    def _update(self, manifest: dict[str, Any], seen: dict[str, Any] | None, attempts: int = 3) -> Any:
        """Apply `manifest` over the live object: first over `seen` (as observed), then, after a conflict
        (someone wrote it since), over a fresh read."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        observed = [seen] if seen is not None else []

        def patch() -> Any:
            return self._patch(manifest, observed.pop() if observed else self._read(kind, name))

        return self._call("patch", kind, patch, attempts=attempts)

    def _patch(self, manifest: dict[str, Any], current: dict[str, Any], *, ours_only: bool = False) -> Any:
        ops = three_way_patch(last_applied(current), with_last_applied(manifest), current)
        if ops and ours_only:
            ops.insert(0, {"op": "test", "path": "/metadata/labels/" + pointer(MANAGED_BY_LABEL), "value": MANAGED_BY})
        if not ops:
            return current
        return self._method("patch", manifest["kind"])(manifest["metadata"]["name"], self._ns, ops)

    def _delete(self, kind: str, name: str) -> None:
        try:
            self._method("delete", kind)(name, self._ns)
        except ApiException as e:
            if e.status != 404:  # already gone is what we wanted
                raise

    def _new_pods(self, deployment: dict[str, Any], version: str | None) -> list[dict[str, Any]]:
        """The pods of this Deployment's own selector that run the version being rolled out."""
        match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return [pod for pod in self.pods(match)
                if version is None or (pod["metadata"].get("annotations") or {}).get(MODEL_VERSION) == version]

    def _call(self, verb: str, kind: str, fn: Callable[[], T], attempts: int = 3) -> T:
        """One API call with bounded retries (backing off) for conflicts, throttling and server errors."""
        for attempt in range(attempts):
            if verb in WRITES:
                self._lease.check()
            try:
                return fn()
            except ApiException as e:
                error = translate(e, verb, _resource(kind), kind, self._ns)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                error = Retryable(f"Kubernetes API unreachable ({verb} {kind}): {type(e).__name__}")
            if not isinstance(error, Retryable) or attempt == attempts - 1:
                raise error
            self._sleep(min(0.2 * 2**attempt, 5.0))
        raise AssertionError("unreachable")


def _resource(kind: str) -> str:
    known = KINDS | UNOBSERVED
    return known[kind].resource if kind in known else _OTHER_RESOURCES.get(kind, kind.lower())


def _in_apply_order(manifests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifests in KINDS order (the NetworkPolicy first); a stable sort, so one kind's keep theirs."""
    return sorted(manifests, key=lambda manifest: list(KINDS).index(manifest["kind"]))
