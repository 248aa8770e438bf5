"""`python -m watcher watch`: one pass or many, back-off, surviving outages and bugs, SIGTERM, metrics.

Against the webhook-enabled MLflow server, moto S3 and kmock; the SIGTERM test runs the real
command in a child process, because only a process can receive the signal the kubelet sends.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow, free_port, stop_process
from model_wrapper.contract.naming import model_slug
from tests.ops.conftest import WEBHOOK_SECRET
from tests.ops.support import in_background, new_version, passes, scrape, status_is, tags_of, wait_until
from tests.peers import KubernetesPeer, all_ready
from watcher.clients.registry import Registry
from watcher.config.settings import Settings
from watcher.decide.types import Selector
from watcher.entry.cli import main
from watcher.entry.loop import backoff_delay, run_watch
from watcher.reconcile.engine import reconcile_once

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("deployments", "services", "ingresses")


@pytest.mark.parametrize(("failures", "jitter", "expected"), [
    (1, 1.0, 1.0), (2, 1.0, 2.0), (3, 1.0, 4.0), (9, 1.0, 256.0), (10, 1.0, 300.0), (10_000, 1.0, 300.0),
    (3, 0.0, 2.0), (10, 0.0, 150.0), (0, 1.0, 1.0),
])
def test_back_off_doubles_after_each_failure_is_capped_and_jittered_down_to_half(
    failures: int, jitter: float, expected: float
) -> None:
    assert backoff_delay(failures, cap=300, rand=lambda: jitter) == expected


def test_back_off_jitter_spreads_watchers_that_failed_together() -> None:
    delays = {backoff_delay(4, cap=300) for _ in range(50)}
    assert len(delays) > 40 and all(4 <= delay <= 8 for delay in delays)


def _use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **extra: str) -> None:
    for key, value in {**env, **extra}.items():
        monkeypatch.setenv(key, value)


@pytest.mark.usefixtures("root_logging")
def test_watch_once_deploys_the_selected_model_and_exits_zero(
    process_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, controller: KubernetesPeer, namespace: str,
    model_name: str, production: dict[str, str], iris_files: LoggedModel,
) -> None:
    version = new_version(model_name, iris_files, tags=production)
    _use_env(monkeypatch, process_env)
    assert main(["watch", "--once"]) == 0
    assert tags_of(model_name, version)["deployment_status"] == "deployed"
    assert all(model_slug(model_name) in controller.objects(plural, namespace) for plural in KINDS)


@pytest.mark.usefixtures("root_logging")
def test_watch_once_dry_run_prints_the_plan_and_writes_nothing(
    process_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    controller: KubernetesPeer, namespace: str, model_name: str, production: dict[str, str],
    iris_files: LoggedModel,
) -> None:
    version = new_version(model_name, iris_files, tags=production)
    _use_env(monkeypatch, process_env)
    assert main(["watch", "--once", "--dry-run"]) == 0
    assert f"new: {model_name} v{version} as {model_slug(model_name)}" in capsys.readouterr().out
    assert controller.writes(namespace) == []
    assert "deployment_status" not in tags_of(model_name, version)


def test_watch_once_exits_one_when_the_registry_cannot_be_reached(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any]
) -> None:
    settings = make_settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    assert run_watch(settings, deps_factory, once=True) == 1


def test_watch_survives_a_registry_outage_and_deploys_once_the_registry_is_back(
    registry: LocalMlflow, make_settings: Callable[..., Settings], deps_factory: Callable[..., Any],
    controller: KubernetesPeer, namespace: str, model_name: str, production: dict[str, str],
    iris_files: LoggedModel,
) -> None:
    settings = make_settings(poll_interval_seconds=1, backoff_max_seconds=1, metrics_port=free_port())
    port = settings.metrics_port
    with in_background(run_watch, settings, deps_factory) as run:
        wait_until(lambda: passes(port, "poll", "ok") >= 1, 30, "a first pass")
        registry.stop()
        try:
            wait_until(lambda: passes(port, "poll", "aborted") >= 2, 30, "passes to abort during the outage")
        finally:
            registry.start()
        version = new_version(model_name, iris_files, tags=production)
        wait_until(status_is(model_name, version, "deployed"), 30, "the model deployed after the outage")
    assert run.code == 0
    assert model_slug(model_name) in controller.objects("deployments", namespace)


class FailsOnce(Registry):
    """The project's own registry seam, failing the first search the way a bug would (no real peer can)."""

    failed = False

    def find(self, selector: Selector, name: str | None = None) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the first pass")
        return super().find(selector, name)


def test_an_unexpected_error_in_one_pass_is_counted_and_the_next_pass_runs(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any], controller: KubernetesPeer,
    model_name: str, production: dict[str, str], iris_files: LoggedModel,
) -> None:
    version = new_version(model_name, iris_files, tags=production)
    settings = make_settings(metrics_port=free_port())  # polls hourly: the retry comes from the back-off

    def build(settings: Settings, **kwargs: Any) -> Any:
        return deps_factory(settings, registry=FailsOnce(settings.mlflow_tracking_uri), **kwargs)

    with in_background(run_watch, settings, build):
        wait_until(status_is(model_name, version, "deployed"), 30, "the pass after the failed one")
        wait_until(lambda: passes(settings.metrics_port, "poll", "ok") == 1, 10, "the good pass to be counted")
        assert passes(settings.metrics_port, "poll", "error") == 1


def test_metrics_count_passes_model_failures_duration_and_deployed_models(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any], controller: KubernetesPeer,
    model_name: str, production: dict[str, str], iris_files: LoggedModel,
) -> None:
    new_version(model_name, iris_files, tags=production)
    broken = LoggedModel(f"{model_name}-x", "", "s3://models/nothing-here", None, None)  # type: ignore[arg-type]
    new_version(broken.name, broken, tags=production)  # no contract, no signature: fails
    settings = make_settings(metrics_port=free_port())
    with in_background(run_watch, settings, deps_factory):
        wait_until(lambda: passes(settings.metrics_port, "poll", "ok") == 1, 30, "the start-up pass")
        samples = scrape(settings.metrics_port)
    assert samples[("service_builder_deployed_models", ())] == 1
    assert samples[("service_builder_model_failures_total", (("trigger", "poll"),))] == 1
    assert samples[("service_builder_pass_duration_seconds_count", (("trigger", "poll"),))] == 1
    assert samples[("service_builder_last_success_timestamp_seconds", ())] > time.time() - 60


def test_sigterm_during_a_rollout_stops_within_seconds_and_leaves_no_half_applied_model(
    process_env: dict[str, str], make_settings: Callable[..., Settings], deps_factory: Callable[..., Any],
    controller: KubernetesPeer, namespace: str, model_name: str, production: dict[str, str],
    iris_files: LoggedModel, tmp_path: Path,
) -> None:
    names = [f"{model_name}-1", f"{model_name}-2"]
    for name in names:
        new_version(name, iris_files, tags=production)
    controller.set_rollout_policy(lambda deployment: None)  # no controller: no Deployment ever becomes ready
    # A watcher that ignored the signal would wait out the rollout timeout, ten times the bound on the exit below.
    env = {**process_env, "POLL_INTERVAL_SECONDS": "3600", "ROLLOUT_TIMEOUT_SECONDS": "600", "LOG_FORMAT": "json"}
    log_path = tmp_path / "watch.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen([sys.executable, "-m", "watcher", "watch"], cwd=ROOT, env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                 start_new_session=True)
        try:
            wait_until(lambda: controller.objects("deployments", namespace), 60, "the first rollout to start")
            child.send_signal(signal.SIGTERM)
            try:
                code = child.wait(60)  # a bound for a loaded machine, not a measurement
            except subprocess.TimeoutExpired:
                raise AssertionError("still running 60 s after SIGTERM: " + log_path.read_text()[-2000:]) from None
        finally:
            stop_process(child)
    assert code == 0, log_path.read_text()[-2000:]
    for name in names:
        present = {plural for plural in KINDS if model_slug(name) in controller.objects(plural, namespace)}
        assert present in (set(), set(KINDS)), f"{name} half-applied: {sorted(present)}"
    assert controller.objects("leases", namespace) == {}, "the lease was not released"
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(line.get("model") == names[0] and line.get("version") == 1 for line in lines)
    assert "devstack-secret" not in text and WEBHOOK_SECRET not in text
    # Nothing was left stuck: the next pass, with a working controller, deploys both.
    controller.set_rollout_policy(all_ready)
    report = reconcile_once(deps_factory(make_settings()))
    assert report.deployed == 2, report.failures
