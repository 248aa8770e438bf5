"""The inference log and drift on the local target: the watcher deploys a model whose contract turns the
log on, the wrapper it starts logs where `drift` reads, and `drift NAME` (and `watch`, on its schedule) measures
the deployed version against its logged input example."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT, iris_frame, log_sklearn_model, train_iris
from model_wrapper.contract.naming import model_slug
from tests.wrapper.models import REQUIREMENTS
from watcher.config.settings import Settings
from watcher.entry import commands
from watcher.entry.loop import Stop, Watch
from watcher.entry.metrics import Metrics
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.targets.local_front import ROUTES_FILE, read_routes

CONTRACT = IRIS_CONTRACT + "logging: {sample: 1.0}\ndrift: {min_requests: 50}\n"


def test_a_model_deployed_on_the_local_target_logs_where_drift_reads_it(
        make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], state_dir: object,
        model_name: str, production: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_LOG_BATCH_SECONDS", "0.3")  # the local target passes its environment on
    settings = make_settings(deploy_target="local", local_state_dir=state_dir, rollout_timeout_seconds=120,
                             inference_log_prefix=f"local-log-{uuid.uuid4().hex[:8]}")
    features, _ = iris_frame()
    log_sklearn_model(model_name, train_iris(), features, contract=CONTRACT, tags=production,
                      pip_requirements=REQUIREMENTS)
    assert reconcile_once(make_deps(settings)).deployed == 1
    endpoint = MlflowClient().get_model_version(model_name, "1").tags["model_endpoint"]

    for start in range(0, 150, 10):
        _post(f"{endpoint}predict", {"instances": features[start:start + 10].to_dict("records")})
    # The endpoint is the local front's; the wrapper's own /metrics is at the address the front routes to.
    (backend,) = [b for b in read_routes(settings.local_state_dir / "front" / ROUTES_FILE)[model_slug(model_name)]
                  if b.weight > 0]
    _wait_written(backend.url.rstrip("/").split("/", 3)[:3], 15)
    lines: list[str] = []

    deps = replace(make_deps(settings), clock=lambda: datetime.now(UTC))  # the fixtures' clock is fixed
    assert commands.drift(deps, model_name, out=lines.append) == 0

    tags = MlflowClient().get_model_version(model_name, "1").tags
    assert tags["drift_status"] in ("ok", "drifted")
    assert "; 16 requests 20" in tags["drift_summary"], "ours and the watcher's smoke test"
    assert lines[0].startswith(f"{model_name} v1: {tags['drift_status']}: max PSI ")
    watch = Watch(deps, settings, Metrics(), Stop())
    watch.measure_drift()  # what `watch` runs every DRIFT_INTERVAL_SECONDS
    gauge = watch.metrics.registry.get_sample_value("model_drift_max_psi", {"model": model_name, "version": "1"})
    assert gauge == pytest.approx(float(tags["drift_summary"].split()[2]), abs=0.006)
    MlflowClient().delete_model_version_tag(model_name, "1", "deploy")
    assert reconcile_once(make_deps(settings)).undeployed == 1


def _post(url: str, body: object) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _wait_written(origin: list[str], requests: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen("/".join(origin) + "/metrics", timeout=5) as response:
            text = response.read().decode()
        written = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(
            "model_wrapper_inference_log_records_total{") and 'outcome="written"' in line)
        if written >= requests:
            return
        assert time.monotonic() < deadline, f"{written} of {requests} requests logged"
        time.sleep(0.2)
