"""Prometheus metrics for one served model, and the ASGI middleware that records them.

Created by `create_app`; every series carries the model name and version. Each app gets its own
registry, so tests (and several apps in one process) never share counters. With WORKERS > 1 the
server sets PROMETHEUS_MULTIPROC_DIR before the workers start (prometheus-client's multiprocess
mode): each worker writes its counts to files there, and `/metrics`, whichever worker answers it,
sums them, so a scrape sees the pod's totals.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Scope = dict[str, Any]


class Metrics:
    """Requests, latency and errors of one model version, by endpoint."""

    def __init__(self, model: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "version", "endpoint"]
        self._labels = (model, version)
        self.requests = Counter("model_wrapper_requests_total", "HTTP requests answered",
                                [*labels, "status"], registry=self.registry)
        self.latency = Histogram("model_wrapper_request_duration_seconds", "Time to answer a request",
                                 labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("model_wrapper_errors_total", "Requests answered with a 4xx or 5xx status",
                              [*labels, "status"], registry=self.registry)
        self._children: dict[tuple[str, int], tuple[Any, Any, Any | None]] = {}
        log_records = Counter("model_wrapper_inference_log_records_total",
                              "Inference-log records (one per logged request) by outcome: written to S3, or "
                              "dropped (queue full, or still unwritten when the SIGTERM drain ended)",
                              ["model", "version", "outcome"], registry=self.registry)
        self._log_written = log_records.labels(model, version, "written")
        self._log_dropped = log_records.labels(model, version, "dropped")
        self._log_errors = Counter("model_wrapper_inference_log_write_errors_total",
                                   "Failed inference-log uploads (each retried)", ["model", "version"],
                                   registry=self.registry).labels(model, version)

    def log_written(self, records: int) -> None:
        self._log_written.inc(records)

    def log_dropped(self, records: int) -> None:
        self._log_dropped.inc(records)

    def log_write_error(self) -> None:
        self._log_errors.inc()

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        children = self._children.get((endpoint, status))
        if children is None:  # label look-ups take a lock; do them once per (endpoint, status)
            children = self._children[(endpoint, status)] = self._resolve(endpoint, status)
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def _resolve(self, endpoint: str, status: int) -> tuple[Any, Any, Any]:
        code = str(status)
        errors = self.errors.labels(*self._labels, endpoint, code) if status >= 400 else None
        return (self.requests.labels(*self._labels, endpoint, code), self.latency.labels(*self._labels, endpoint),
                errors)

    def render(self) -> bytes:
        directory = os.environ.get(MULTIPROCESS_DIR)
        if not directory:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker, path=directory)
        return generate_latest(every_worker)


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body copy): times each request and counts its status."""

    def __init__(self, app: Any, metrics: Metrics, endpoints: dict[str, str], prefix: str) -> None:
        self.app, self.metrics, self.endpoints, self.prefix = app, metrics, endpoints, prefix

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe(self._endpoint(scope["path"]), status, time.perf_counter() - started)

    def _endpoint(self, path: str) -> str:
        # Only known names become label values: a scanner's random paths must not grow the series.
        name = self.endpoints.get(path)
        if name is not None:
            return name
        return "docs" if path.startswith(self.prefix) else "other"
