"""The one worker behind `watch` and `serve-webhooks`: requested passes coalesce, never overlap, and wait
for the Lease another watcher holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from devstack.models import LoggedModel
from devstack.servers import free_port
from tests.ops.support import new_version, passes, status_is, tags_of, wait_until
from tests.peers import KubernetesPeer
from watcher.clients.registry import Registry
from watcher.config.settings import Settings
from watcher.decide.types import Selector
from watcher.entry.loop import Stop, watching
from watcher.targets.kubernetes.cluster import api_client


class Gate(Registry):
    """The project's registry seam with a gate in its search: a test holds a pass there and counts overlaps."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.hold, self.inside, self.release = False, threading.Event(), threading.Event()
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def find(self, selector: Selector, name: str | None = None) -> Any:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.hold:
                self.hold = False
                self.inside.set()
                self.release.wait(30)
            return super().find(selector, name)
        finally:
            with self._lock:
                self.running -= 1


def test_a_burst_of_requests_while_a_pass_runs_becomes_one_pass_per_model_never_two_at_once(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any], controller: KubernetesPeer,
    model_name: str, production: dict[str, str], iris_files: LoggedModel,
) -> None:
    first, second = f"{model_name}-1", f"{model_name}-2"
    settings = make_settings(metrics_port=free_port())
    gate = Gate(settings.mlflow_tracking_uri)
    stop = Stop()
    with watching(settings, lambda s, **kw: deps_factory(s, registry=gate, **kw), stop=stop) as watch:
        worker = threading.Thread(target=watch.run_forever, daemon=True)
        worker.start()
        try:
            wait_until(lambda: passes(settings.metrics_port, "poll", "ok") == 1, 30, "the start-up pass")
            gate.hold = True
            watch.request(first)
            assert gate.inside.wait(10), "the requested pass did not start"
            versions = {name: new_version(name, iris_files, tags=production) for name in (first, second)}
            for _ in range(5):
                watch.request(first)
            watch.request(second)
            gate.release.set()
            for name, version in versions.items():
                wait_until(status_is(name, version, "deployed"), 30, f"{name} deployed")
            wait_until(lambda: passes(settings.metrics_port, "webhook", "ok") >= 3, 10, "the passes to be counted")
            assert passes(settings.metrics_port, "webhook", "ok") == 3, "one held pass, then one per model"
        finally:
            stop.set()
            worker.join(20)
    assert gate.most_at_once == 1


def test_a_requested_pass_waits_for_the_lease_another_watcher_holds_then_runs(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any], controller: KubernetesPeer,
    namespace: str, model_name: str, production: dict[str, str], iris_files: LoggedModel,
) -> None:
    settings = make_settings(metrics_port=free_port())
    leases = client.CoordinationV1Api(api_client(settings))
    stop = Stop()
    with watching(settings, deps_factory, stop=stop) as watch:
        worker = threading.Thread(target=watch.run_forever, daemon=True)
        worker.start()
        try:
            wait_until(lambda: passes(settings.metrics_port, "poll", "ok") == 1, 30, "the start-up pass")
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            leases.create_namespaced_lease(namespace, {"metadata": {"name": settings.lease_name}, "spec": {
                "holderIdentity": "another-watcher", "leaseDurationSeconds": 300, "renewTime": now}})
            version = new_version(model_name, iris_files, tags=production)
            watch.request(model_name)
            wait_until(lambda: passes(settings.metrics_port, "webhook", "skipped") >= 1, 20, "a skipped pass")
            assert "deployment_status" not in tags_of(model_name, version)
            leases.delete_namespaced_lease(settings.lease_name, namespace)
            wait_until(status_is(model_name, version, "deployed"), 30, "the retried pass to deploy")
        finally:
            stop.set()
            worker.join(20)

