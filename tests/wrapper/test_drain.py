"""A rolling update drops no request: a real wrapper process under steady load receives SIGTERM.

What a pod sees when Kubernetes replaces it (the website's pod-lifecycle page, "Pod termination"): SIGTERM
arrives while the removal of its endpoint is still spreading to kube-proxy and the Ingress controller,
so requests keep arriving for a while. The wrapper turns readiness 503 at once and keeps answering for
DRAIN_SECONDS, then stops as uvicorn does. Figures (sent, failed, drain time) go to BENCHMARKS.md.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow
from model_wrapper.config.settings import WrapperSettings
from tests.wrapper.conftest import Served, serve

DRAIN_SECONDS = 2.0
CLIENTS = 4
BODY = {"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}


@dataclass
class Load:
    """Requests sent by a few keep-alive clients until stopped: (sent at, succeeded)."""

    url: str
    outcomes: list[tuple[float, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    ok = client.post(self.url, json=BODY).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.outcomes.append((sent, ok))


@pytest.fixture
def draining(iris_model: LoggedModel, mlflow_server: LocalMlflow) -> Iterator[Served]:
    yield from serve(iris_model, mlflow_server, DRAIN_SECONDS=str(DRAIN_SECONDS))


def first_503(served: Served, stop: threading.Event, seen: list[float]) -> None:
    with httpx.Client(timeout=2) as client:
        while not stop.is_set() and not seen:
            try:
                if client.get(served.base + "ready").status_code == 503:
                    seen.append(time.monotonic())
            except httpx.HTTPError:
                pass
            time.sleep(0.01)


def test_no_request_sent_before_readiness_turned_503_fails_and_the_drain_keeps_serving(draining: Served) -> None:
    loads = [Load(draining.base + "predict") for _ in range(CLIENTS)]
    threads = [threading.Thread(target=load.run) for load in loads]
    turned: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(target=first_503, args=(draining, stop, turned))
    for thread in [*threads, watcher]:
        thread.start()
    time.sleep(1.0)  # steady load first
    process = draining.wrapper.process
    assert process is not None

    sigterm = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    process.wait(DRAIN_SECONDS + 20)
    exited = time.monotonic()
    for load in loads:
        load.stop.set()
    stop.set()
    for thread in [*threads, watcher]:
        thread.join(15)

    outcomes = sorted(o for load in loads for o in load.outcomes)
    assert turned, "readiness never answered 503 after SIGTERM"
    before_503 = [ok for sent, ok in outcomes if sent < turned[0]]
    during_drain = [ok for sent, ok in outcomes if turned[0] <= sent < sigterm + DRAIN_SECONDS - 0.3]
    after = [ok for sent, ok in outcomes if sent >= sigterm + DRAIN_SECONDS]
    print(f"\ndrain: {len(outcomes)} requests sent; failed before 503 {before_503.count(False)}/{len(before_503)}, "
          f"during the drain {during_drain.count(False)}/{len(during_drain)}, after it (no pod gets traffic "
          f"then) {after.count(False)}/{len(after)}; readiness 503 after {turned[0] - sigterm:.3f} s, "
          f"exit after {exited - sigterm:.2f} s (DRAIN_SECONDS={DRAIN_SECONDS})")

    assert before_503 and all(before_503), "a request sent before readiness turned 503 failed"
    assert during_drain and all(during_drain), "the wrapper stopped answering during the drain"
    assert DRAIN_SECONDS <= exited - sigterm < DRAIN_SECONDS + 10


def test_the_rendered_pod_outlives_the_drain_and_a_busy_pod_is_not_restarted() -> None:
    rendered = Path(__file__).resolve().parents[2] / "docs" / "examples" / "iris-manifests.yaml"  # `make examples`
    (deployment,) = [d for d in yaml.safe_load_all(rendered.read_text()) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > WrapperSettings.model_fields["drain_seconds"].default
    assert pod["containers"][0]["livenessProbe"]["timeoutSeconds"] >= 3
