"""Prometheus metrics of the long-running watcher: passes, model failures, pass duration, deployed models.

Each `Metrics` owns its own CollectorRegistry, so two loops in one process (or two tests) never
share counters. `watch` and `serve-webhooks` expose it on METRICS_PORT.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from watcher.reconcile.deps import PassReport
    from watcher.reconcile.ports import Target
    from watcher.render.manifests import Rendered

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.passes = Counter("service_builder_passes", "Reconcile passes by trigger (poll, webhook) and outcome "
                              "(ok, skipped: another watcher held the lease, aborted: registry or cluster "
                              "unreachable, error: unexpected)", ["trigger", "outcome"], registry=self.registry)
        self.model_failures = Counter("service_builder_model_failures", "Models whose action failed in a pass",
                                      ["trigger"], registry=self.registry)
        self.pass_duration = Histogram("service_builder_pass_duration_seconds", "Wall time of one pass",
                                       ["trigger"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.deployed_models = Gauge("service_builder_deployed_models",
                                     "Models the target runs (managed by Service Builder) after the last pass",
                                     registry=self.registry)
        self.drift_max_psi = Gauge("model_drift_max_psi", "Largest feature PSI of a deployed version's last drift "
                                   "measurement (DRIFT_INTERVAL_SECONDS); the contract's drift.max_psi is the line",
                                   ["model", "version"], registry=self.registry)
        self.last_success = Gauge("service_builder_last_success_timestamp_seconds",
                                  "Unix time of the last pass that ran to its end", registry=self.registry)
        self.webhook_events = Counter("service_builder_webhook_events", "Webhook deliveries by outcome (accepted, "
                                      "ignored, unsigned, forged, stale, replayed, invalid)", ["outcome"],
                                      registry=self.registry)

    def observe_pass(self, trigger: str, outcome: str, seconds: float, report: PassReport | None,
                     deployed: int | None) -> None:
        self.passes.labels(trigger, outcome).inc()
        self.pass_duration.labels(trigger).observe(seconds)
        if report is not None:
            self.model_failures.labels(trigger).inc(report.failed)
            if not report.skipped:
                self.last_success.set(time.time())
        if deployed is not None:
            self.deployed_models.set(deployed)

    def serve(self, port: int, address: str) -> Callable[[], None]:
        """Expose /metrics on `address:port` from a daemon thread; returns the function that stops it."""
        server, thread = start_http_server(port, address, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop


class CountingTarget:
    """A target that remembers how many managed models its last `observe()` saw.

    The deployed-models gauge then costs no request of its own: the pass lists the namespace anyway.
    """

    def __init__(self, target: Target) -> None:
        self._target = target
        self._lock = threading.Lock()
        self.managed: int | None = None

    def deployed_after(self, report: PassReport | None) -> int | None:
        """Managed models once the pass's new deploys and undeploys are counted (None before any observe)."""
        with self._lock:
            if self.managed is None or report is None:
                return self.managed
            return self.managed + report.deployed - report.undeployed

    def observe(self) -> Any:
        snapshot = self._target.observe()
        with self._lock:
            self.managed = sum(1 for item in snapshot.live() if item.managed and item.kinds)
        return snapshot

    def apply(self, rendered: Rendered, snapshot: Any) -> None:
        self._target.apply(rendered, snapshot)

    def wait_ready(self, rendered: Rendered, timeout: float) -> None:
        self._target.wait_ready(rendered, timeout)

    def finish(self, rendered: Rendered, snapshot: Any) -> None:
        self._target.finish(rendered, snapshot)

    def roll_back(self, rendered: Rendered, snapshot: Any) -> None:
        self._target.roll_back(rendered, snapshot)

    def evaluate(self, job: dict[str, Any], timeout: float) -> str:
        return self._target.evaluate(job, timeout)

    def remove(self, slug: str, snapshot: Any) -> None:
        self._target.remove(slug, snapshot)

    def exclusive(self) -> Any:
        return self._target.exclusive()

    def endpoint(self, slug: str) -> str:
        return self._target.endpoint(slug)

    def smoke_base(self, slug: str) -> str | None:
        return self._target.smoke_base(slug)

    def __getattr__(self, name: str) -> Any:
        """What else the target can do (a candidate beside the live version, `RolloutTarget`), unchanged: the
        pass asks for it by name, so the count must not hide it."""
        if name.startswith("_"):  # not set yet (a copy being built): never recurse into ourselves
            raise AttributeError(name)
        return getattr(self._target, name)
