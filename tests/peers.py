"""kmock's KubernetesEmulator served over HTTP from its own thread and event loop.

The synchronous `kubernetes` client (and so the watcher) must never run on kmock's loop;
here the loop lives in a daemon thread and the tests stay plain synchronous code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kmock

from tests.control_plane import ControlPlane, PodPolicy, all_ready
from tests.kubelet import BAD_IMAGE, PENDING, READY, Pods, crash
from tests.rbac import ADMIN_HEADERS

__all__ = ["BAD_IMAGE", "PENDING", "READY", "KubernetesPeer", "Pods", "RolloutPolicy", "all_ready", "crash"]

# The resources the emulator serves: the watcher's managed kinds (one line each), what the
# controller makes (ReplicaSets, Pods) and what admission reads (IngressClasses).
RESOURCES = {
    "apps/v1/deployments": kmock.ResourceInfo(kind="Deployment", namespaced=True),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True),
    "networking.k8s.io/v1/ingresses": kmock.ResourceInfo(kind="Ingress", namespaced=True),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(kind="HorizontalPodAutoscaler", namespaced=True),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(kind="PodDisruptionBudget", namespaced=True),
    "networking.k8s.io/v1/networkpolicies": kmock.ResourceInfo(kind="NetworkPolicy", namespaced=True),
    "coordination.k8s.io/v1/leases": kmock.ResourceInfo(kind="Lease", namespaced=True),
    "apps/v1/replicasets": kmock.ResourceInfo(kind="ReplicaSet", namespaced=True),
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True),
    "networking.k8s.io/v1/ingressclasses": kmock.ResourceInfo(kind="IngressClass", namespaced=False),
    # The evaluation gate's Jobs, and the Secret their pods read S3 credentials from.
    "batch/v1/jobs": kmock.ResourceInfo(kind="Job", namespaced=True),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", namespaced=True),
    # A shadow rollout's mirroring config, which the live model pods mount.
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", namespaced=True),
}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
DEFAULT_INGRESS_CLASS = "nginx"
"""The cluster's default IngressClass, which admission writes into an Ingress created without one."""

RolloutPolicy = PodPolicy


class KubernetesPeer:
    """A running emulator; `url` is its API server address."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator: ControlPlane | None = None
        self._server: kmock.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def start(self) -> KubernetesPeer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("kmock did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._enter())
        self._ready.set()
        self.loop.run_forever()

    async def _enter(self) -> None:
        self.emulator = ControlPlane()
        await self.emulator.__aenter__()
        for key, info in RESOURCES.items():
            self.emulator.resources[key] = info
        self.emulator.objects["networking.k8s.io/v1/ingressclasses", None, DEFAULT_INGRESS_CLASS] = {
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": DEFAULT_INGRESS_CLASS, "annotations": {
                "ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "k8s.io/ingress-nginx"}}
        self.emulator.start_controller()
        self._server = kmock.Server(self.emulator)
        await self._server.__aenter__()

    def stop(self) -> None:
        async def _exit() -> None:
            assert self._server is not None and self.emulator is not None
            await self.emulator.stop_controller()
            await self._server.__aexit__(None, None, None)
            self.emulator._errors[-1].clear()  # the 4xx answers tests asked for are not the emulator's failures
            await self.emulator.__aexit__(None, None, None)

        asyncio.run_coroutine_threadsafe(_exit(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.url).rstrip("/")

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the emulator's loop (for touching its state safely) and return its result."""

        async def _call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(_call(), self.loop).result(10)

    def first_deployment(self, namespace: str, timeout: float = 60) -> str:
        """The name of the first Deployment that appears in `namespace` (a watcher is mid-pass)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.objects("deployments", namespace):
                return next(iter(found))
            time.sleep(0.05)
        raise AssertionError("the watcher never created a Deployment")

    def set_rollout_policy(self, policy: PodPolicy) -> None:
        """What the kubelet does with pods from now on (pod template -> `Pods`; None: they never start)."""
        ControlPlane.pod_policy = staticmethod(policy)
        if self.emulator is not None:
            self.call(self.emulator.touch)

    set_pod_policy = set_rollout_policy

    def advance(self, seconds: float) -> None:
        """Move the controller's clock, e.g. past a Deployment's progressDeadlineSeconds."""
        assert self.emulator is not None
        self.call(lambda: self.emulator.advance(seconds) if self.emulator else None)

    def pause_controller(self, paused: bool = True) -> None:
        """Stop (or restart) the Deployment controller: written Deployments are then never observed."""
        ControlPlane.controller_paused = paused
        if self.emulator is not None and not paused:
            self.call(self.emulator.touch)

    def wait_settled(self, namespace: str, timeout: float = 30) -> None:
        """Until the controller has nothing left to do in `namespace` (every rollout done or stuck)."""
        emulator = self.emulator
        assert emulator is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if not self.call(lambda: namespace in emulator._dirty):
                return
        raise AssertionError(f"the controller never settled in {namespace}")

    # --- assertions helpers -------------------------------------------------------------

    def requests(self, namespace: str) -> list[kmock.Request]:
        emulator = self.emulator
        assert emulator is not None
        return self.call(lambda: [r for r in emulator if r.namespace == namespace])

    def writes(self, namespace: str) -> list[kmock.Request]:
        return [r for r in self.requests(namespace) if r.method.value in WRITE_METHODS]

    def objects(self, plural: str, namespace: str) -> dict[str, dict[str, Any]]:
        """Live objects of one resource (`deployments`, `services`, `ingresses`, `leases`) by name."""
        emulator = self.emulator
        assert emulator is not None

        def collect() -> dict[str, dict[str, Any]]:
            found = {}
            for (resource, ns, name), obj in emulator.objects.items():
                if resource.plural == plural and ns == namespace and not obj.deleted:
                    found[name] = dict(obj.raw)
            return found

        return self.call(collect)

    def patch_object(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge `patch` into a stored object behind the API server's back (what no client can do)."""
        emulator = self.emulator
        assert emulator is not None

        def apply() -> None:
            for (resource, ns, obj_name), obj in emulator.objects.items():
                if resource.plural == plural and ns == namespace and obj_name == name:
                    obj.patch(patch)
                    emulator.touch(namespace)
                    return
            raise KeyError(f"{plural}/{namespace}/{name}")

        self.call(apply)

    def create(self, api_path: str, namespace: str, obj: dict[str, Any]) -> None:
        """POST `obj` as any client would, e.g. `create("api/v1", ns, pod)` or `create("apis/apps/v1", ns, deploy)`."""
        plurals = {info.kind: key.rsplit("/", 1)[1] for key, info in RESOURCES.items()}
        plural = plurals[obj["kind"]]
        request = urllib.request.Request(f"{self.url}/{api_path}/namespaces/{namespace}/{plural}", method="POST",
                                         data=json.dumps(obj).encode(),
                                         headers={"Content-Type": "application/json", **ADMIN_HEADERS})
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status not in (200, 201):
                raise RuntimeError(f"kmock answered {response.status} creating {obj['kind']}")

    def patch(self, api_path: str, namespace: str, plural: str, name: str, ops: list[dict[str, Any]]) -> None:
        """JSON-patch one object as any client would (another controller, or a person with kubectl)."""
        request = urllib.request.Request(f"{self.url}/{api_path}/namespaces/{namespace}/{plural}/{name}",
                                         method="PATCH", data=json.dumps(ops).encode(),
                                         headers={"Content-Type": "application/json-patch+json", **ADMIN_HEADERS})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def delete(self, api_path: str, namespace: str, plural: str, name: str) -> None:
        """DELETE one object as any client would (a person running kubectl delete)."""
        url = f"{self.url}/{api_path}/namespaces/{namespace}/{plural}/{name}"
        with urllib.request.urlopen(urllib.request.Request(url, method="DELETE", headers=ADMIN_HEADERS), timeout=10):
            pass


class MlflowAccessLog:
    """Counts MLflow requests at the server side, from the access lines the `mlflow server` logs.

    uvicorn writes each line before the response leaves, so once a client has its answer the line
    is in the file. `mark()` starts a count; `since()` lists (method, path) of what came after.
    """

    LINE = re.compile(r'"(GET|POST|PATCH|PUT|DELETE) (\S+) HTTP/[\d.]+" \d{3}')

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size

    def since(self) -> list[tuple[str, str]]:
        with self.path.open("rb") as log:
            log.seek(self._offset)
            text = log.read().decode(errors="replace")
        return [(match[1], match[2]) for match in self.LINE.finditer(text)]


@contextmanager
def s3_requests() -> Iterator[list[str]]:
    """The request lines moto's S3 server (a werkzeug server in this process) logs while inside the block."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger, handler = logging.getLogger("werkzeug"), Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def pass_settings(tracking_uri: str, s3_url: str, kube: KubernetesPeer, namespace: str,
                  production: dict[str, str], state_dir: Any, **overrides: Any) -> Any:
    """Watcher settings against this session's peers, in one test's namespace, selecting by `production`."""
    from watcher.config.settings import load_settings

    values: dict[str, Any] = {
        "mlflow_tracking_uri": tracking_uri, "mlflow_s3_endpoint_url": s3_url,
        "aws_access_key_id": "devstack-key", "aws_secret_access_key": "devstack-secret",
        "k8s_api": kube.url, "k8s_name_space": namespace, "service_builder_host_name": "models.example.org",
        "model_wrapper_image": "registry.example.org/model-wrapper:1.0", "rollout_timeout_seconds": 5,
        "local_state_dir": state_dir, "selector": f"tag:deploy={production['deploy']}",
        "local_front_port": 0,  # tests run side by side: each local front on a free port
    }
    values.update(overrides)
    return load_settings(**values)
