"""`/healthz` of the long-running watcher: green while passes progress, 503 with the reason while one is stuck.

The verdict is table-tested as a pure function; end to end, a real `serve-webhooks` loop talks to the emulated
API server through a loopback proxy that holds one list request unanswered (a connection that answers nothing,
under a request timeout longer than the stuck bound), and the receiver's `/healthz` is polled until it says so,
then until it recovers once the request is let through and the pass ends.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from devstack.servers import free_port
from tests.faults.proxy import FaultProxy
from tests.ops.conftest import WEBHOOK_SECRET
from tests.ops.support import delivery, in_background, passes, post, tag_event, wait_until
from tests.peers import KubernetesPeer
from tests.test_docs import ROOT
from watcher.config.settings import Settings, load_settings
from watcher.entry.health import Beats, Health, stuck
from watcher.entry.webhooks import PATH, serve
from watcher.reconcile.deps import Deps

BOUND, IDLE = 60.0, 120.0


@pytest.mark.parametrize(("case", "beats", "now", "reason"), [
    ("a pass that just started", Beats(finished=0, progressed=100, running=100), 101, None),
    ("a long pass that keeps progressing", Beats(finished=0, progressed=5000, running=100), 5050, None),
    ("a pass quiet for the bound exactly", Beats(finished=0, progressed=100, running=100), 160, None),
    ("a pass quiet for longer", Beats(finished=0, progressed=100, running=90), 161,
     "the pass running for 71s has shown no progress for 61s (STUCK_PASS_SECONDS=60)"),
    ("between passes, within the loop's pause", Beats(finished=100, progressed=100), 280, None),
    ("no pass finished for the pause and the bound", Beats(finished=100, progressed=100), 281,
     "no pass has finished for 181s (the loop waits at most 120s between passes)"),
    ("a loop that never started a pass", Beats(finished=0, progressed=0), 200,
     "no pass has finished for 200s (the loop waits at most 120s between passes)"),
])
def test_the_loop_is_stuck_when_a_pass_goes_quiet_or_no_pass_finishes(
        case: str, beats: Beats, now: float, reason: str | None) -> None:
    assert stuck(beats, now, bound=BOUND, idle=IDLE) == reason, case


def test_the_bound_defaults_to_the_longest_quiet_stretch_one_model_may_take(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert load_settings().stuck_after_seconds == 300 + 900 + 60 + 4 * 30 + 120
    assert load_settings(rollout_timeout_seconds=60, stuck_pass_seconds=90).stuck_after_seconds == 90


def test_waits_and_actions_count_as_progress_and_the_end_of_a_pass_clears_it() -> None:
    clock = [0.0]
    settings = Settings(mlflow_tracking_uri="http://mlflow:5000", stuck_pass_seconds=10, poll_interval_seconds=30,
                        backoff_max_seconds=5)
    health = Health(settings, clock=lambda: clock[0])
    slept: list[float] = []
    health.pass_started()
    clock[0] = 9
    health.beating(slept.append)(2.0)  # the target's wait between two polls
    clock[0] = 18
    assert health.problem() is None and slept == [2.0]
    clock[0] = 20
    assert health.problem() == "the pass running for 20s has shown no progress for 11s (STUCK_PASS_SECONDS=10)"
    health.pass_finished()
    assert health.problem() is None
    clock[0] = 61
    assert health.problem() == "no pass has finished for 41s (the loop waits at most 30s between passes)"


def health_of(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_pass_that_hangs_turns_healthz_503_with_the_reason_and_green_again_once_it_ends(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Deps], controller: KubernetesPeer,
    model_name: str, production: dict[str, str],
) -> None:
    proxy = FaultProxy(controller.url).start()
    try:
        settings = make_settings(metrics_port=free_port(), stuck_pass_seconds=1, k8s_api=proxy.url,
                                 k8s_request_timeout_seconds=600)
        with in_background(serve, settings, deps_factory):
            wait_until(lambda: passes(settings.metrics_port, "poll", "ok") == 1, 60, "the start-up pass")
            assert health_of(settings.webhook_port) == (200, {"status": "ok"})
            held = proxy.hold(r"^GET /apis/apps/v1/namespaces/[^/]+/deployments\?")
            event = tag_event(model_name, 1, "deploy", production["deploy"])
            assert post(f"http://127.0.0.1:{settings.webhook_port}{PATH}", *delivery(event, WEBHOOK_SECRET)) == 202
            wait_until(lambda: bool(held.hits), 60, "the webhook pass to send the list that is held")

            body = wait_until(lambda: (found := health_of(settings.webhook_port))[0] == 503 and found[1], 60,
                              "/healthz to report the stuck pass")
            assert body["status"] == "stuck" and "has shown no progress for" in body["reason"]
            assert "STUCK_PASS_SECONDS=1" in body["reason"]

            assert held.release is not None
            held.release.set()
            wait_until(lambda: health_of(settings.webhook_port)[0] == 200, 60, "/healthz to recover")
            wait_until(lambda: passes(settings.metrics_port, "webhook", "ok") == 1, 60, "the webhook pass to end")
    finally:
        proxy.stop()


def test_the_watch_deployment_is_restarted_by_its_liveness_probe_on_healthz() -> None:
    manifest = yaml.safe_load((ROOT / "cronjob" / "watch" / "deployment.yaml").read_text())
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve-webhooks"], "the receiver serves /healthz"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "webhooks"}
    assert {"name": "webhooks", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
