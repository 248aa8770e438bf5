"""Step 5 of the pass on Kubernetes: observe, apply (create-or-patch), wait for rollout, roll back, remove.

The only watcher module that imports `kubernetes`. One list per resource kind observes the
whole namespace; objects without the managed-by label are reported, never touched.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from model_wrapper.contract import Serving
from watcher.errors import Blocked, PassAborted, Permanent, Retryable, RolloutFailed, ServiceBuilderError
from watcher.lease import Lease
from watcher.plan import Live
from watcher.render import (
    INPUTS_DIGEST,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_NAME,
    MODEL_VERSION,
    SERVING,
    SPEC_HASH,
    Rendered,
)
from watcher.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT = (5, 30)
LEASE_SECONDS = 60  # renewed while held; after a crash, the next CronJob run (2 min later) finds it expired
_STUCK = {"ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff", "CreateContainerConfigError", "InvalidImageName"}


@dataclass
class Snapshot:
    """What the namespace holds, from one list per kind: raw objects by (kind, name), and per-slug views."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def live(self) -> list[Live]:
        by_slug: dict[str, dict[str, dict[str, Any]]] = {}
        for (kind, name), obj in self.objects.items():  # one walk: a pass stays linear in the models
            by_slug.setdefault(name, {})[kind] = obj
        return [self._live(slug, by_slug[slug]) for slug in sorted(by_slug)]

    def _live(self, slug: str, present: dict[str, dict[str, Any]]) -> Live:
        managed = all(_managed(obj) for obj in present.values())
        first = present.get("Deployment") or next(iter(present.values()))
        notes = first.get("metadata", {}).get("annotations") or {}
        return Live(slug=slug, model=notes.get(MODEL_NAME, "") if managed else "",
                    version=_int(notes.get(MODEL_VERSION)), spec_hash=notes.get(SPEC_HASH, ""),
                    inputs_digest=notes.get(INPUTS_DIGEST, ""), serving=_serving(notes.get(SERVING)),
                    kinds=frozenset(present), managed=managed)


class KubernetesTarget:
    """Runs models as Deployment + Service + Ingress in one namespace."""

    def __init__(self, settings: Settings, api: client.ApiClient | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._settings = settings
        self._ns = settings.k8s_name_space
        self._api = api or api_client(settings)
        self._apps = client.AppsV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self._net = client.NetworkingV1Api(self._api)
        self._sleep = sleep
        self._lease = Lease(client.CoordinationV1Api(self._api), self._ns, settings.lease_name,
                            duration=LEASE_SECONDS)

    # --- observe ------------------------------------------------------------------------

    def observe(self) -> Snapshot:
        snapshot = Snapshot()
        listings: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.list_namespaced_deployment, "Service": self._core.list_namespaced_service,
            "Ingress": self._net.list_namespaced_ingress}
        for kind, list_fn in listings.items():
            try:
                # The JSON as sent: the client's models would cost ~1 ms an object to build and undo.
                answer = self._call("list", kind, partial(list_fn, self._ns, _request_timeout=TIMEOUT,
                                                          _preload_content=False))
                items = json.loads(answer.data).get("items") or []
            except Retryable as e:
                raise PassAborted(f"Kubernetes API unreachable: {e}") from e
            except ValueError as e:
                raise PassAborted(f"Kubernetes API answered the {kind} list with something not JSON: {e}") from e
            for obj in items:
                snapshot.objects[(kind, obj["metadata"]["name"])] = obj
        return snapshot

    # --- apply ----------------------------------------------------------------------------

    def apply(self, rendered: Rendered, snapshot: Snapshot) -> None:
        for manifest in rendered.manifests:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            existing = snapshot.objects.get((kind, name))
            if existing is None:
                self._call("create", kind, partial(self._create, manifest))
            elif not _managed(existing):
                raise Blocked(f"{kind} {name!r} exists and is not managed by Service Builder")
            elif (existing["metadata"].get("annotations") or {}).get(SPEC_HASH) != rendered.spec_hash:
                self._call("patch", kind, partial(self._patch, manifest))

    def wait_ready(self, rendered: Rendered, timeout: float) -> None:
        """Block until the Deployment's new template is fully ready, or raise RolloutFailed saying why."""
        name = rendered.deployment["metadata"]["name"]
        deadline = time.monotonic() + timeout
        polls = 0
        while True:
            deployment = self._call("get", "Deployment", lambda: self._apps.read_namespaced_deployment(
                name, self._ns, _request_timeout=TIMEOUT))
            if _rolled_out(deployment):
                return
            polls += 1
            stuck = _deadline_exceeded(deployment) or (polls % 5 == 0 and self._pod_problem(name, stuck_only=True))
            if stuck or time.monotonic() >= deadline:
                raise RolloutFailed(self._why_not_ready(name, deployment, timeout))
            self._sleep(1.0)

    def roll_back(self, rendered: Rendered, snapshot: Snapshot) -> None:
        """Put back what ran before this release; remove what did not exist before."""
        for manifest in reversed(rendered.manifests):
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            previous = snapshot.objects.get((kind, name))
            if previous is None:
                self._call("delete", kind, partial(self._delete, kind, name))
            else:
                self._call("patch", kind, partial(self._patch, previous))

    def finish(self, rendered: Rendered, snapshot: Snapshot) -> None:
        """Nothing left to do on Kubernetes: the Deployment's rolling update retired the old pods."""

    def remove(self, slug: str, snapshot: Snapshot) -> None:
        for kind in ("Ingress", "Service", "Deployment"):
            obj = snapshot.objects.get((kind, slug))
            if obj is not None and _managed(obj):
                self._call("delete", kind, partial(self._delete, kind, slug))

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

    def _create(self, manifest: dict[str, Any]) -> Any:
        creators: dict[str, Callable[..., Any]] = {"Deployment": self._apps.create_namespaced_deployment,
                    "Service": self._core.create_namespaced_service, "Ingress": self._net.create_namespaced_ingress}
        try:
            return creators[manifest["kind"]](self._ns, manifest, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 409:
                raise
        # It exists after all: an earlier try whose answer was lost (a 5xx or timeout after the write)
        # created it. Adopt it, but only if it carries our label: never take over someone else's object.
        return self._patch(manifest, ours_only=True)

    def _patch(self, manifest: dict[str, Any], *, ours_only: bool = False) -> Any:
        # A JSON patch replaces exactly the parts we own; every API server (and kmock) supports it.
        meta = manifest["metadata"]
        owner = "/metadata/labels/" + MANAGED_BY_LABEL.replace("~", "~0").replace("/", "~1")
        ops: list[dict[str, Any]] = [{"op": "test", "path": owner, "value": MANAGED_BY}] if ours_only else []
        ops += [{"op": "add", "path": "/metadata/labels", "value": meta.get("labels") or {}},
                {"op": "add", "path": "/metadata/annotations", "value": meta.get("annotations") or {}},
                {"op": "add", "path": "/spec", "value": manifest["spec"]}]
        patchers: dict[str, Callable[..., Any]] = {"Deployment": self._apps.patch_namespaced_deployment,
                    "Service": self._core.patch_namespaced_service, "Ingress": self._net.patch_namespaced_ingress}
        return patchers[manifest["kind"]](meta["name"], self._ns, ops, _request_timeout=TIMEOUT)

    def _delete(self, kind: str, name: str) -> None:
        deleters: dict[str, Callable[..., Any]] = {"Deployment": self._apps.delete_namespaced_deployment,
                    "Service": self._core.delete_namespaced_service, "Ingress": self._net.delete_namespaced_ingress}
        try:
            deleters[kind](name, self._ns, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 404:  # already gone is what we wanted
                raise

    def _pod_problem(self, slug: str, *, stuck_only: bool = False) -> str | None:
        pods = self._call("list", "Pod", lambda: self._core.list_namespaced_pod(
            self._ns, label_selector=f"{INSTANCE_LABEL}={slug}", _request_timeout=TIMEOUT)).items
        for pod in pods:
            if pod.metadata is None or (pod.metadata.labels or {}).get(INSTANCE_LABEL) != slug:
                continue  # selectors are advisory on some API servers; check ourselves
            for status in (pod.status.container_statuses if pod.status else None) or []:
                waiting = status.state.waiting if status.state else None
                last = status.last_state.terminated if status.last_state else None
                if waiting and (waiting.reason in _STUCK or not stuck_only):
                    detail = (last.message if last and last.message else waiting.message) or ""
                    return f"{waiting.reason}: {detail}".strip(": ")[:400]
        return None

    def _why_not_ready(self, name: str, deployment: Any, timeout: float) -> str:
        reason = self._pod_problem(name) or _condition_message(deployment)
        detail = f": {reason}" if reason else ""
        return f"not ready after {timeout:.0f}s{detail}"

    def _call(self, verb: str, kind: str, fn: Callable[[], T], attempts: int = 3) -> T:
        """One API call with bounded retries for conflicts and server errors; errors translated."""
        for attempt in range(attempts):
            try:
                return fn()
            except ApiException as e:
                error = _translate(e, verb, kind, self._ns)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                error = Retryable(f"Kubernetes API unreachable ({verb} {kind}): {type(e).__name__}")
            if not isinstance(error, Retryable) or attempt == attempts - 1:
                raise error
            self._sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")


def api_client(settings: Settings) -> client.ApiClient:
    """Bearer token (K8S_API + K8S_API_KEY), else in-cluster config, else kubeconfig."""
    if settings.k8s_api:
        configuration = client.Configuration()
        configuration.host = settings.k8s_api
        configuration.verify_ssl = settings.k8s_verify_ssl
        if settings.k8s_api_key:
            configuration.api_key = {"authorization": settings.k8s_api_key.get_secret_value()}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as e:
            raise PassAborted(f"no Kubernetes access: set K8S_API, run in a cluster or provide a kubeconfig ({e})") \
                from None
    return client.ApiClient()


def _translate(error: ApiException, verb: str, kind: str, namespace: str) -> ServiceBuilderError:
    resource = {"Deployment": "deployments", "Service": "services", "Ingress": "ingresses", "Pod": "pods",
                "Lease": "leases"}.get(kind, kind.lower())
    if error.status == 403:
        return Blocked(f"forbidden: the watcher's Role lacks '{verb}' on {resource} in namespace {namespace}")
    if error.status == 409 or error.status == 429 or (error.status or 0) >= 500:
        return Retryable(f"Kubernetes answered {error.status} to {verb} {kind}; will retry")
    if error.status == 422:
        return Permanent(f"Kubernetes rejected the {kind}: {_api_message(error)}")
    return Permanent(f"Kubernetes answered {error.status} to {verb} {kind}: {_api_message(error)}")


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message", ""))[:300]
    except ValueError:
        return str(error.reason or "")[:300]


def _managed(obj: dict[str, Any]) -> bool:
    return (obj.get("metadata", {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def _rolled_out(deployment: Any) -> bool:
    spec, status, meta = deployment.spec, deployment.status, deployment.metadata
    if status is None:
        return False
    wanted = spec.replicas if spec.replicas is not None else 1
    generation_seen = meta.generation is None or (status.observed_generation or 0) >= meta.generation
    updated = status.updated_replicas is None or status.updated_replicas >= wanted
    return generation_seen and updated and (status.ready_replicas or 0) >= wanted


def _deadline_exceeded(deployment: Any) -> bool:
    return any(c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded"
               for c in (deployment.status.conditions if deployment.status else None) or [])


def _condition_message(deployment: Any) -> str:
    for condition in (deployment.status.conditions if deployment.status else None) or []:
        if condition.status != "True" and condition.message:
            return f"{condition.reason}: {condition.message}"[:400]
    return ""


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _serving(value: str | None) -> Serving:
    try:
        return Serving.model_validate_json(value) if value else Serving()
    except ValueError:
        return Serving()
