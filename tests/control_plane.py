"""A Kubernetes control plane for tests: kmock's object store, the API server's write rules, and the
Deployment, ReplicaSet and kubelet behaviour that a real cluster adds, each written from its source.

kmock 0.8 stores objects, answers 404/409 and applies patches as plain dict merges; it has no
controller, no defaulting, no label selectors and no paging. `ControlPlane` adds them, following
(kubernetes/kubernetes unless said otherwise):

- Authorization: every request of the watcher's identity is checked against `cronjob/role.yaml` as the
  RBAC authorizer does, before any handler, and refused with its 403 Status (tests/rbac.py).
- API server writes: `staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go` and
  `pkg/registry/apps/deployment/strategy.go` (`PrepareForCreate`: generation 1, status cleared;
  `PrepareForUpdate`: status kept, generation +1 when `spec` changed, and for a Deployment also when its
  annotations changed; a label change never moves it); every write moves
  `resourceVersion`; a write that carries a stale `resourceVersion` is 409 Conflict, one without it
  never is (`GuaranteedUpdate` retries internally); a delete whose DeleteOptions `preconditions`
  (resourceVersion, uid) do not match is 409 too. `staging/src/k8s.io/apiserver/pkg/endpoints/
  handlers/patch.go`: the body is read as its Content-Type says (JSON patch, merge patch; strategic
  merge is served as a merge patch, which is the same for the maps used here); a JSON patch that
  cannot be applied, a failed `test` op included, is 422; so is an update of a Deployment's selector
  (`pkg/apis/apps/validation/validation.go`, `ValidateDeploymentUpdate`: immutable in apps/v1).
- Defaults: `pkg/apis/apps/v1/defaults.go` (`SetDefaults_Deployment`: replicas 1, RollingUpdate
  25%/25%, revisionHistoryLimit 10, progressDeadlineSeconds 600) and `pkg/apis/core/v1/defaults.go`
  (Service type ClusterIP, port protocol TCP, targetPort = port; every pod template's
  `SetDefaults_PodSpec`, `SetDefaults_Container`, `SetDefaults_Probe`, on create and update:
  tests/pod_defaults.py); the Service REST storage keeps the allocated clusterIP when an update
  leaves it out (`patchAllocatedValues`).
- `plugin/pkg/admission/network/defaultingressclass/admission.go`: on create only, an Ingress
  without `ingressClassName` (and without the legacy class annotation) gets the default class.
- The Deployment controller, `pkg/controller/deployment/`: `sync.go` (`getNewReplicaSet`: a new
  ReplicaSet per template, the `deployment.kubernetes.io/revision` annotation, the
  `NewReplicaSetCreated` condition, and `FoundNewReplicaSet` only where no Progressing condition was
  recorded, so a `ProgressDeadlineExceeded` outlives a roll-back to an existing ReplicaSet until the
  controller sees progress; `calculateStatus`), `rolling.go`
  (`reconcileNewReplicaSet`: scale up within maxSurge; `reconcileOldReplicaSets`: scale down old
  pods only while minAvailable holds, unhealthy ones first), `progress.go` (`syncRolloutStatus`:
  `ReplicaSetUpdated` on progress, `NewReplicaSetAvailable` when complete,
  `ProgressDeadlineExceeded` after progressDeadlineSeconds without progress) and
  `util/deployment_util.go` (`ResolveFenceposts`, `DeploymentComplete`, `DeploymentProgressing`,
  `DeploymentTimedOut`). So a rolling update keeps the old pod Ready while the new one starts,
  and `observedGeneration` lags a write by at least one controller step.
- `staging/src/k8s.io/api/apps/v1/types.go`: every DeploymentStatus count is `omitempty`, so a
  zero is an absent field.
- `pkg/controller/replicaset/replica_set.go`: a ReplicaSet's pods carry the template's labels and
  `pod-template-hash`; surplus pods go not-ready first.
- The kubelet (tests/kubelet.py, from `pkg/kubelet/kubelet.go`, `pkg/kubelet/kuberuntime` and
  `pkg/kubelet/images/image_manager.go`): a container waits in `ContainerCreating`, then runs (Ready),
  or fails: a bad image shows `ErrImagePull` on the first pull and `ImagePullBackOff` after; a
  crashing one restarts at once, then after the kubelet's back-off (10 s doubling to 300 s, on this
  clock) while it waits in `CrashLoopBackOff`, with `restartCount` and `lastState.terminated` (exit
  code, termination message) as the kubelet reports them; a started pod (running, crashing or failing its image
  pull) has its sandbox's address (`podIP`, `podIPs`:
  `pkg/kubelet/kubelet_pods.go`, `generateAPIPodStatus`).

The HorizontalPodAutoscaler's rescale rule (`pkg/controller/podautoscaler/horizontal.go`) is
`tests/hpa_controller.py`.

Jobs (the evaluation gate's) are `tests/job_controller.py`: the Job controller and a kubelet that
runs the Job's container for real.

What pods do is a test's choice (`pod_policy`: pod template -> `Pods`); the clock the controller
judges progress by is `now()`, which tests move with `advance()` rather than waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp.web
import jsonpatch
import kmock

from tests.hpa_controller import HPAS, HpaController
from tests.job_controller import JOBS, JobController
from tests.kubelet import PENDING, READY, Pods, container_step, parse, restart_due, stamp
from tests.pod_defaults import default_pod_spec
from tests.rbac import Authorizer

DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
REPLICASETS = kmock.resource("apps", "v1", "replicasets")
PODS = kmock.resource("", "v1", "pods")
SERVICES = kmock.resource("", "v1", "services")
INGRESSES = kmock.resource("networking.k8s.io", "v1", "ingresses")
INGRESS_CLASSES = kmock.resource("networking.k8s.io", "v1", "ingressclasses")
REVISION = "deployment.kubernetes.io/revision"
DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
TICK_SECONDS = 0.05
HAS_GENERATION = {"deployments", "replicasets", "ingresses", "jobs", "networkpolicies",
                  "horizontalpodautoscalers", "poddisruptionbudgets", "statefulsets", "daemonsets"}


PodPolicy = Callable[[dict[str, Any]], Pods | None]
"""Pod template -> what its pods do; None is `pending`."""


def all_ready(template: dict[str, Any]) -> Pods:
    """The default: every pod starts and becomes Ready."""
    return READY


class Rejected(kmock.KubernetesError):
    """A write the API server refuses with a Status (409, 415, 422)."""


class ControlPlane(JobController, HpaController, kmock.KubernetesEmulator):
    """kmock's emulator with the API server's write rules and a controller that runs on its own loop."""

    pod_policy: PodPolicy = staticmethod(all_ready)
    controller_paused: bool = False

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._offset = 0.0
        self._revision = itertools.count(1000)
        self._writes = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._by_namespace: dict[str | None, set[Any]] = {}
        self._dirty: set[str | None] = set()
        """Namespaces written to since the controller last found nothing to do in them."""
        self._wakeups: dict[str, datetime] = {}
        """When a namespace's crashed container is due to restart (the kubelet's back-off ends)."""
        self.rbac = Authorizer()

    # --- the clock ------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset)

    def advance(self, seconds: float) -> None:
        """Move the controller's clock (progress deadlines) without waiting."""
        self._offset += seconds
        self.touch()

    def touch(self, namespace: str | None = None) -> None:
        """Have the controller look at `namespace` (every namespace when None) on its next step."""
        self._dirty.update([namespace] if namespace is not None else self._by_namespace)

    def start_controller(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def stop_controller(self) -> None:
        self.stop_job_containers()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if not self.controller_paused:
                async with self._writes:
                    try:
                        self.step()
                    except Exception:  # a test's pod policy that raises must not stop the controller for all
                        logging.getLogger(__name__).exception("controller step failed; it goes on")

    # --- the API server ---------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self.rbac.authorize(request)  # the authorization filter runs before any handler (tests/rbac.py)
        action = request.action
        if request.resource is None or action not in (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE):
            return await kmock.KubernetesScaffold._handle(self, request)
        async with self._writes:  # the controller never runs between a write and the reactions that see it
            if action == kmock.action.CREATE:
                self._create(request)
            elif action == kmock.action.UPDATE and request.name:
                self._update(request)
            elif action == kmock.action.DELETE and request.name:
                self._check_preconditions(request)
                self._delete(request.resource, request.namespace, request.name)
            return await kmock.KubernetesScaffold._handle(self, request)

    def _create(self, request: Any) -> None:
        obj = copy.deepcopy(request.data or {})
        if not isinstance(obj, dict):
            raise Rejected(status=400, reason="BadRequest", message="the body of a create must be an object")
        meta = obj.setdefault("metadata", {})
        namespace = request.namespace or meta.get("namespace")
        key = (request.resource, namespace, meta.get("name"))
        if key in self._objects and not self._objects[key].deleted:
            raise Rejected(status=409, reason="AlreadyExists",
                           message=f'{request.resource.plural} "{meta.get("name")}" already exists')
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_stamp(self.now()))
        meta.pop("resourceVersion", None)
        if request.resource.plural in HAS_GENERATION:
            meta["generation"] = 1
        obj.pop("status", None)
        self._default(request.resource.plural, obj, None)
        if request.resource == JOBS:
            self.default_job(obj)
        if request.resource == INGRESSES:
            self._default_ingress_class(obj)
        self._store(request.resource, namespace, meta["name"], obj)

    def _update(self, request: Any) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError(
                reason="NotFound", message=f'{request.resource.plural} "{request.name}" not found')
        old = copy.deepcopy(self._objects[key].raw)
        new = self._patched(old, request)
        stated = (new.get("metadata") or {}).get("resourceVersion")
        if stated and stated != old["metadata"].get("resourceVersion"):
            raise Rejected(status=409, reason="Conflict", message=(
                f'Operation cannot be fulfilled on {request.resource.plural} "{request.name}": the object has '
                "been modified; please apply your changes to the latest version and try again"))
        for field in ("uid", "creationTimestamp", "namespace", "name"):
            new.setdefault("metadata", {})[field] = old["metadata"].get(field)
        if request.subresource == "status":
            new = dict(old, status=new.get("status"))
        else:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
            self._default(request.resource.plural, new, old)
            # pkg/apis/apps/validation/validation.go, ValidateDeploymentUpdate: the selector is immutable (apps/v1).
            if request.resource == DEPLOYMENTS and (new.get("spec") or {}).get("selector") != \
                    (old.get("spec") or {}).get("selector"):
                raise Rejected(status=422, reason="Invalid", message=(
                    f'Deployment.apps "{request.name}" is invalid: spec.selector: Invalid value: '
                    f'{json.dumps(new["spec"].get("selector"))}: field is immutable'))
            if request.resource.plural in HAS_GENERATION:
                generation = int(old["metadata"].get("generation") or 1)
                # strategy.go: a Deployment's annotations bump it too (they are copied to its ReplicaSets).
                notes = request.resource == DEPLOYMENTS and (new["metadata"].get("annotations") or {}) != (
                    old["metadata"].get("annotations") or {})
                new["metadata"]["generation"] = generation + (new.get("spec") != old.get("spec") or notes)
        if new != old:
            self._store(request.resource, request.namespace, request.name, new)

    def _patched(self, old: dict[str, Any], request: Any) -> dict[str, Any]:
        content_type = str(request.headers.get("Content-Type", "")).split(";")[0].strip()
        body = request.data
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise Rejected(status=400, reason="BadRequest",
                               message="a JSON patch must be a list of operations")
            try:
                return dict(jsonpatch.apply_patch(old, body, in_place=False))
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise Rejected(status=422, reason="Invalid", message=f"the JSON patch cannot be applied: {e}") from e
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise Rejected(status=400, reason="BadRequest", message="a merge patch must be an object")
            return _merge(old, body)
        raise Rejected(status=415, reason="UnsupportedMediaType",
                       message=f"the body of a PATCH cannot be {content_type or 'untyped'}")

    def _check_preconditions(self, request: Any) -> None:
        """store.go's Delete: DeleteOptions.preconditions (uid, resourceVersion) checked against the stored object;
        a mismatch is a 409 Conflict (`storeerr.InterpretDeleteError`)."""
        wanted = (request.data or {}).get("preconditions") if isinstance(request.data, dict) else None
        key = (request.resource, request.namespace, request.name)
        if not wanted or key not in self._objects or self._objects[key].deleted:
            return
        meta = self._objects[key].raw["metadata"]
        for field, label in (("resourceVersion", "ResourceVersion"), ("uid", "UID")):
            if wanted.get(field) and wanted[field] != meta.get(field):
                raise Rejected(status=409, reason="Conflict", message=(
                    f'Operation cannot be fulfilled on {request.resource.plural} "{request.name}": Precondition '
                    f"failed: {label} in precondition: {wanted[field]}, {label} in object meta: {meta.get(field)}"))

    def _delete(self, resource: Any, namespace: str | None, name: str) -> None:
        key = (resource, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError(reason="NotFound",
                                                      message=f'{resource.plural} "{name}" not found')
        uid = self._objects[key].raw["metadata"].get("uid")
        self._objects[key].delete()
        self._revision_bump()
        self._dirty.add(namespace)
        # The garbage collector deletes what the object owned (background propagation).
        for (res, ns, child), obj in list(self._objects.items()):
            if ns == namespace and not obj.deleted and any(
                    ref.get("uid") == uid for ref in obj.raw["metadata"].get("ownerReferences") or []):
                self._delete(res, ns, child)

    def _store(self, resource: Any, namespace: str | None, name: str, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = self._revision_bump()
        key = (resource, namespace, name)
        if key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        self._by_namespace.setdefault(namespace, set()).add(key)
        self._dirty.add(namespace)

    def _revision_bump(self) -> str:
        return str(next(self._revision))

    def _default(self, plural: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        pod_spec = spec if plural == "pods" else (spec.get("template") or {}).get("spec")
        if plural in ("deployments", "replicasets", "jobs", "pods") and isinstance(pod_spec, dict):
            default_pod_spec(pod_spec)  # tests/pod_defaults.py: pkg/apis/core/v1/defaults.go
        if plural == "deployments":
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {})
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
        elif plural == "services":
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
            kept = ((old or {}).get("spec") or {}).get("clusterIP")
            spec.setdefault("clusterIP", kept or f"10.96.{next(self._revision) % 250}.{next(self._revision) % 250}")

    def _default_ingress_class(self, obj: dict[str, Any]) -> None:
        spec = obj.setdefault("spec", {})
        legacy = (obj["metadata"].get("annotations") or {}).get("kubernetes.io/ingress.class")
        if spec.get("ingressClassName") or legacy:
            return
        defaults = [o.raw for (res, _, _), o in self._objects.items() if res == INGRESS_CLASSES and not o.deleted
                    and (o.raw["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true"]
        if len(defaults) == 1:
            spec["ingressClassName"] = defaults[0]["metadata"]["name"]

    # --- lists: label selectors, limit and continue ----------------------------------------------

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        items = sorted((obj.raw for (res, ns, _), obj in self._objects.items()
                        if res == request.resource and not obj.deleted
                        and (request.namespace is None or ns == request.namespace)),
                       key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        selector = request.params.get("labelSelector")
        if selector:
            items = [o for o in items if _selected(o, selector)]
        start = int(request.params.get("continue") or 0)
        limit = int(request.params.get("limit") or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta: dict[str, Any] = {"resourceVersion": str(next(self._revision))}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        return {"kind": "List", "apiVersion": "v1", "metadata": meta, "items": page}

    # --- the controllers ------------------------------------------------------------------------

    def step(self) -> None:
        """One sync of every Deployment, its ReplicaSets and their pods (the kubelet included), in the
        namespaces where something changed; a namespace where a step changes nothing rests until the next
        write, `touch()`, `advance()` or the end of a crashed container's back-off."""
        now = self.now()
        for waking, due in list(self._wakeups.items()):
            if due <= now:
                del self._wakeups[waking]
                self._dirty.add(waking)
        for namespace in list(self._dirty):
            self._dirty.discard(namespace)
            for key in sorted(self._by_namespace.get(namespace, ()), key=lambda k: k[2]):
                if key[0] == DEPLOYMENTS and key in self._objects and not self._objects[key].deleted:
                    self._sync_deployment(namespace or "", key[2])
                elif key[0] == JOBS and key in self._objects and not self._objects[key].deleted:
                    self.sync_job(namespace or "", key[2])
                elif key[0] == HPAS and key in self._objects and not self._objects[key].deleted:
                    self.sync_hpa(namespace or "", key[2])

    def _live(self, resource: Any, namespace: str) -> list[dict[str, Any]]:
        found = []
        for key in self._by_namespace.get(namespace, ()):
            obj = self._objects._objects.get(key)
            if key[0] == resource and obj is not None and not obj.deleted:
                found.append(obj.raw)
        return sorted(found, key=lambda o: o["metadata"]["name"])

    def _owned(self, resource: Any, namespace: str, owner: dict[str, Any]) -> list[dict[str, Any]]:
        uid = owner["metadata"]["uid"]
        return [o for o in self._live(resource, namespace)
                if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])]

    def _save(self, resource: Any, obj: dict[str, Any]) -> None:
        key = (resource, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key not in self._objects or self._objects[key].deleted or self._objects[key].raw != obj:
            self._store(resource, obj["metadata"]["namespace"], obj["metadata"]["name"], copy.deepcopy(obj))

    def _sync_deployment(self, namespace: str, name: str) -> None:
        d = copy.deepcopy(self._objects[(DEPLOYMENTS, namespace, name)].raw)
        replica_sets = self._owned(REPLICASETS, namespace, d)
        for rs in replica_sets:
            self._sync_replica_set(rs)
        new_rs, created = self._new_replica_set(d, replica_sets)
        old = [rs for rs in self._owned(REPLICASETS, namespace, d)
               if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        if not created:
            self._reconcile_new(d, new_rs, old)
            self._reconcile_old(d, new_rs, old)
        self._sync_status(d, new_rs, old, created)

    def _new_replica_set(self, d: dict[str, Any], replica_sets: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        template = d["spec"]["template"]
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        revisions = [int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")) for rs in replica_sets]
        for rs in replica_sets:
            if rs["metadata"]["labels"].get("pod-template-hash") == template_hash:
                mine, highest = int(rs["metadata"]["annotations"][REVISION]), max(revisions, default=0)
                if mine < highest:  # an older template is back (a roll-back): it becomes the newest revision
                    mine = highest + 1
                    rs["metadata"]["annotations"][REVISION] = str(mine)
                    self._save(REPLICASETS, rs)
                if _find((d.get("status") or {}).get("conditions"), "Progressing") is None:
                    # sync.go sets FoundNewReplicaSet only when no Progressing condition was recorded: after a
                    # roll-back a ProgressDeadlineExceeded stays until syncRolloutStatus sees progress.
                    self._condition(d, "Progressing", "True", "FoundNewReplicaSet",
                                    f'Found new replica set "{rs["metadata"]["name"]}"')
                self._set_revision(d, mine)
                return rs, False
        revision = max(revisions, default=0) + 1
        labels = dict(template.get("metadata", {}).get("labels") or {}, **{"pod-template-hash": template_hash})
        rs_template = copy.deepcopy(template)
        rs_template.setdefault("metadata", {})["labels"] = labels
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{d['metadata']['name']}-{template_hash}", "namespace": d["metadata"]["namespace"],
                           "uid": str(uuid.uuid4()), "labels": labels, "generation": 1,
                           "annotations": {REVISION: str(revision)},
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "controller": True,
                                                "name": d["metadata"]["name"], "uid": d["metadata"]["uid"]}]},
              "spec": {"replicas": self._new_replicas(d, 0, replica_sets),
                       "selector": {"matchLabels": labels}, "template": rs_template},
              "status": {}}
        self._save(REPLICASETS, rs)
        self._set_revision(d, revision)
        self._condition(d, "Progressing", "True", "NewReplicaSetCreated",
                        f'Created new replica set "{rs["metadata"]["name"]}"')
        return rs, True

    def _set_revision(self, d: dict[str, Any], revision: int) -> None:
        # The controller writes the annotation with an Update: resourceVersion moves, generation does not.
        d["metadata"].setdefault("annotations", {})[REVISION] = str(revision)

    def _new_replicas(self, d: dict[str, Any], current: int, replica_sets: list[dict[str, Any]]) -> int:
        """rolling.go's NewRSNewReplicas: up to maxSurge above the wanted count, counting every pod."""
        wanted = d["spec"]["replicas"]
        if d["spec"]["strategy"]["type"] == "Recreate":
            return wanted
        surge, _ = _fenceposts(d)
        all_pods = sum(rs["spec"]["replicas"] for rs in replica_sets)
        if all_pods >= wanted + surge:
            return current
        return current + max(0, min(wanted + surge - all_pods, wanted - current))

    def _reconcile_new(self, d: dict[str, Any], new_rs: dict[str, Any], old: list[dict[str, Any]]) -> None:
        wanted = d["spec"]["replicas"]
        current = new_rs["spec"]["replicas"]
        target = wanted if current > wanted else self._new_replicas(d, current, [new_rs, *old])
        if target != current:
            new_rs["spec"]["replicas"] = target
            self._save(REPLICASETS, new_rs)

    def _reconcile_old(self, d: dict[str, Any], new_rs: dict[str, Any], old: list[dict[str, Any]]) -> None:
        """rolling.go's reconcileOldReplicaSets: scale old pods down only while minAvailable still holds."""
        if not any(rs["spec"]["replicas"] for rs in old):
            return
        _, unavailable = _fenceposts(d)
        min_available = d["spec"]["replicas"] - unavailable
        all_pods = new_rs["spec"]["replicas"] + sum(rs["spec"]["replicas"] for rs in old)
        new_unavailable = new_rs["spec"]["replicas"] - int(new_rs["status"].get("availableReplicas") or 0)
        budget = all_pods - min_available - new_unavailable
        if budget <= 0:
            return
        for rs in old:  # cleanupUnhealthyReplicas: pods that are not available go first
            unhealthy = rs["spec"]["replicas"] - int(rs["status"].get("availableReplicas") or 0)
            cut = min(budget, unhealthy)
            if cut > 0:
                rs["spec"]["replicas"] -= cut
                budget -= cut
                self._save(REPLICASETS, rs)
        available = sum(int(rs["status"].get("availableReplicas") or 0) for rs in [new_rs, *old])
        budget = min(budget, available - min_available)
        for rs in old:  # scaleDownOldReplicaSetsForRollingUpdate
            cut = min(budget, rs["spec"]["replicas"])
            if cut > 0:
                rs["spec"]["replicas"] -= cut
                budget -= cut
                self._save(REPLICASETS, rs)

    def _sync_replica_set(self, rs: dict[str, Any]) -> None:
        namespace = rs["metadata"]["namespace"]
        pods = self._owned(PODS, namespace, rs)
        for pod in pods:
            self._kubelet(pod, rs["spec"]["template"])
        pods = self._owned(PODS, namespace, rs)
        surplus = len(pods) - rs["spec"]["replicas"]
        for pod in sorted(pods, key=_is_ready)[:max(surplus, 0)]:
            self._delete(PODS, namespace, pod["metadata"]["name"])
        for _ in range(-surplus):
            self._create_pod(rs)
        pods = self._owned(PODS, namespace, rs)
        ready = sum(1 for p in pods if _is_ready(p))
        status = _omit_zero({"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                             "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)})
        if rs.get("status") != status:
            rs["status"] = status
            self._save(REPLICASETS, rs)

    def _create_pod(self, rs: dict[str, Any]) -> None:
        template = rs["spec"]["template"]
        containers = (template.get("spec") or {}).get("containers") or []
        name = f"{rs['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": rs["metadata"]["namespace"], "uid": str(uuid.uuid4()),
                            "creationTimestamp": _stamp(self.now()),
                            "labels": dict(template["metadata"]["labels"]),
                            "annotations": dict(template["metadata"].get("annotations") or {}),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True,
                                                 "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"]}]},
               "spec": copy.deepcopy(template.get("spec") or {}),
               "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                          "containerStatuses": [
                              {"name": c.get("name"), "image": c.get("image"), "imageID": "", "ready": False,
                               "restartCount": 0, "started": False,
                               "state": {"waiting": {"reason": "ContainerCreating"}}} for c in containers]}}
        self._save(PODS, pod)

    def _kubelet(self, pod: dict[str, Any], template: dict[str, Any]) -> None:
        behaviour = type(self).pod_policy(template) or PENDING
        status = copy.deepcopy(pod["status"])
        for container in status["containerStatuses"]:
            container_step(container, behaviour, self.now(), pod)
            if (due := restart_due(container)) is not None:
                namespace = pod["metadata"]["namespace"]
                self._wakeups[namespace] = min(due, self._wakeups.get(namespace, due))
        ready = bool(status["containerStatuses"]) and all(c["ready"] for c in status["containerStatuses"])
        status["phase"] = "Running" if behaviour.kind in ("ready", "crash") else "Pending"
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
        # The sandbox's address (kubelet_pods.go, generateAPIPodStatus: PodIP/PodIPs from the sandbox status): every
        # pod the kubelet started has one, a Pending pod whose image cannot be pulled included; one never started not.
        if behaviour.kind in ("ready", "crash", "bad-image"):
            address = _pod_ip(pod["metadata"]["uid"])
            status.update(podIP=address, podIPs=[{"ip": address}])
        if status != pod["status"]:
            pod["status"] = status
            self._save(PODS, pod)

    def _sync_status(self, d: dict[str, Any], new_rs: dict[str, Any], old: list[dict[str, Any]],
                     created: bool) -> None:
        """sync.go's calculateStatus, then progress.go's syncRolloutStatus."""
        before = copy.deepcopy(d.get("status") or {})
        every = [new_rs, *old]
        wanted = d["spec"]["replicas"]
        available = sum(int(rs["status"].get("availableReplicas") or 0) for rs in every)
        spec_total = sum(rs["spec"]["replicas"] for rs in every)
        _, max_unavailable = _fenceposts(d)
        status = {"observedGeneration": d["metadata"]["generation"],
                  "replicas": sum(int(rs["status"].get("replicas") or 0) for rs in every),
                  "updatedReplicas": int(new_rs["status"].get("replicas") or 0),
                  "readyReplicas": sum(int(rs["status"].get("readyReplicas") or 0) for rs in every),
                  "availableReplicas": available, "unavailableReplicas": max(spec_total - available, 0),
                  "conditions": list((d.get("status") or {}).get("conditions") or [])}
        d["status"] = status
        if available >= wanted - max_unavailable:
            self._condition(d, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            self._condition(d, "Available", "False", "MinimumReplicasUnavailable",
                            "Deployment does not have minimum availability.")
        self._progress_condition(d, before, new_rs["metadata"]["name"], created)
        d["status"] = _omit_zero(d["status"])
        self._save(DEPLOYMENTS, d)

    def _progress_condition(self, d: dict[str, Any], before: dict[str, Any], rs_name: str, created: bool) -> None:
        status, wanted = d["status"], d["spec"]["replicas"]
        current = _find(before.get("conditions"), "Progressing")
        if created:
            return  # getNewReplicaSet already set NewReplicaSetCreated
        complete_before = (status["replicas"] == status["updatedReplicas"] and current is not None
                           and current["reason"] == "NewReplicaSetAvailable")
        if complete_before:
            return
        counts = (status["updatedReplicas"], status["replicas"], status["availableReplicas"])
        if counts == (wanted, wanted, wanted) and status["observedGeneration"] >= d["metadata"]["generation"]:
            self._condition(d, "Progressing", "True", "NewReplicaSetAvailable",
                            f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif _progressing(before, status):
            self._condition(d, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.',
                            renew=True)
        elif current is not None and (current["reason"] == "ProgressDeadlineExceeded" or
                                      _parse(current["lastUpdateTime"])
                                      + timedelta(seconds=d["spec"]["progressDeadlineSeconds"]) < self.now()):
            self._condition(d, "Progressing", "False", "ProgressDeadlineExceeded",
                            f'ReplicaSet "{rs_name}" has timed out progressing.')

    def _condition(self, d: dict[str, Any], kind: str, status: str, reason: str, message: str, *,
                   renew: bool = False) -> None:
        """deployment_util.go's SetDeploymentCondition; `renew` is progress.go's ReplicaSetUpdated case."""
        conditions = d.setdefault("status", {}).setdefault("conditions", [])
        current = _find(conditions, kind)
        if current is not None and current["status"] == status and current["reason"] == reason and not renew:
            return
        now = _stamp(self.now())
        transition = current["lastTransitionTime"] if current is not None and current["status"] == status else now
        conditions[:] = [c for c in conditions if c["type"] != kind]
        conditions.append({"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": transition,
                           "reason": reason, "message": message})


def _progressing(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """deployment_util.go's DeploymentProgressing: more updated, ready or available pods, or fewer old ones."""
    def old(status: dict[str, Any]) -> int:
        return int(status.get("replicas") or 0) - int(status.get("updatedReplicas") or 0)

    return any(int(after.get(k) or 0) > int(before.get(k) or 0)
               for k in ("updatedReplicas", "readyReplicas", "availableReplicas")) or old(after) < old(before)


def _fenceposts(d: dict[str, Any]) -> tuple[int, int]:
    """deployment_util.go's ResolveFenceposts: surge rounds up, unavailable down, never both zero."""
    wanted = d["spec"]["replicas"]
    rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}

    def resolve(value: Any, round_up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            exact = wanted * int(value[:-1]) / 100
            return math.ceil(exact) if round_up else math.floor(exact)
        return int(value or 0)

    surge = resolve(rolling.get("maxSurge", "25%"), True)
    unavailable = resolve(rolling.get("maxUnavailable", "25%"), False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _omit_zero(status: dict[str, Any]) -> dict[str, Any]:
    """types.go: every DeploymentStatus/ReplicaSetStatus count is `omitempty`."""
    return {k: v for k, v in status.items() if v not in (0, None, [], {})}


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod["status"].get("conditions") or [])


def _find(conditions: list[dict[str, Any]] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == kind), None)


def _selected(obj: dict[str, Any], selector: str) -> bool:
    """Equality-based label selectors (`a=b,c!=d,e`), as `labels.Parse` reads them."""
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _merge(old: Any, patch: Any) -> Any:
    """RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(old) if isinstance(old, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


_stamp, _parse = stamp, parse


def monotonic() -> float:
    return time.monotonic()


def _pod_ip(uid: str) -> str:
    """A stable address in a pod CIDR (10.244.0.0/16, kubeadm's and kind's default) for the pod `uid`."""
    number = int(hashlib.sha256(uid.encode()).hexdigest()[:4], 16)
    return f"10.244.{number >> 8}.{max(number & 255, 2)}"
