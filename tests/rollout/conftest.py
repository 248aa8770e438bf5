"""Fixtures for progressive delivery on the local target: a watcher on a wall clock (steps last seconds),
candidates registered with a `rollout` section, a flaky candidate, a steady load of callers, and a real
Prometheus for the figures read from it (`PROMETHEUS_URL`)."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT, LoggedModel, _latest_version, iris_frame, log_iris
from devstack.servers import LocalMlflow, free_port, stop_process, wait_http
from tests.evaluation.conftest import bad_iris, variant  # noqa: F401
from tests.reconcile.conftest import _controller_resets, iris, make_deps, make_settings, upload  # noqa: F401
from tests.reconcile.test_local_target import _running, state_dir  # noqa: F401
from tests.wrapper.conftest import WrapperProcess
from watcher.config.settings import Settings
from watcher.decide.progressive import Figures
from watcher.entry.cli import build_deps
from watcher.errors import Retryable
from watcher.reconcile.deps import Deps

FLAKY_MODEL = Path(__file__).with_name("flaky_model.py")


def rollout_contract(section: str) -> str:
    return f"{IRIS_CONTRACT}rollout:\n{section}"


@pytest.fixture
def rollout_deps(make_settings: Callable[..., Settings], state_dir: Path) -> Iterator[Callable[[], Deps]]:  # noqa: F811
    """A fresh watcher each call (as the CronJob's processes are), on one state directory and the wall clock."""
    yield lambda: build_deps(make_settings(deploy_target="local", local_state_dir=state_dir,
                                           rollout_timeout_seconds=120), clock=lambda: datetime.now(UTC))
    for path in (state_dir / "candidates").glob("*.json"):  # the state_dir fixture stops the others
        pid = json.loads(path.read_text()).get("pid")
        if isinstance(pid, int) and _running(pid):
            import os
            import signal
            os.killpg(pid, signal.SIGKILL)


SHADOW = """\
  strategy: shadow
  sample: 0.5
  analysis: {interval: 1, min_requests: 15, max_error_rate: 0.01, max_p99_ms: 2000, min_agreement: 0.95}
"""


@pytest.fixture(scope="session")
def shadowed_iris(mlflow_server: LocalMlflow) -> LoggedModel:
    """The live version's iris classifier logged again, its contract with a shadow `rollout` section."""
    return log_iris("rollout-iris-shadowed", contract=rollout_contract(SHADOW))


@pytest.fixture(scope="session")
def flaky_iris(mlflow_server: LocalMlflow) -> Callable[[str, str], str]:
    """Register a version of the flaky candidate under `name` with `contract`; its version number."""
    def register(name: str, contract: str) -> str:
        features, _ = iris_frame()
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run() as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=str(FLAKY_MODEL),
                                           input_example=features.head(2), pip_requirements=["scikit-learn"])
            (Path(tmp) / "contract.yaml").write_text(contract)
            MlflowClient().log_model_artifact(info.model_id, str(Path(tmp) / "contract.yaml"))
        mlflow.register_model(info.model_uri, name)
        return str(_latest_version(name, run.info.run_id).version)

    return register


class Callers(threading.Thread):
    """Steady load: one caller after another asks `predict` for a random iris row, and notes every answer."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.stop = endpoint, threading.Event()
        self.statuses: list[int] = []
        self.versions: set[str] = set()
        self._rows = iris_frame()[0].to_dict(orient="records")

    def run(self) -> None:
        while not self.stop.is_set():
            body = json.dumps({"instances": [random.choice(self._rows)]}).encode()
            request = urllib.request.Request(f"{self.endpoint}predict", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    self.statuses.append(answer.status)
            except urllib.error.HTTPError as e:
                self.statuses.append(e.code)
            except OSError:
                self.statuses.append(0)
            self.stop.wait(0.01)

    def __enter__(self) -> Callers:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.join()


def tags(name: str, version: str | int) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, str(version)).tags)


def run_until(deps: Callable[[], Deps], done: Callable[[], bool], seconds: float = 40) -> int:
    """Passes, each by a fresh watcher, until `done`; how many it took."""
    import time

    from watcher.reconcile.engine import reconcile_once

    deadline, passes, last = time.monotonic() + seconds, 0, None
    while not done():
        assert time.monotonic() < deadline, f"not done after {passes} passes: {last}"
        last = reconcile_once(deps())
        passes += 1
        time.sleep(0.5)
    return passes



PROMETHEUS = Path("/usr/bin/prometheus")


@dataclass
class PrometheusServer:
    """A real Prometheus (Debian's package) scraping every second the targets the test points it at, through a
    `file_sd_configs` file (what `kubernetes_sd_configs` does with pods in a cluster), and logging each query."""

    url: str
    targets: Path
    query_log: Path

    def point(self, targets: dict[int, dict[str, str]]) -> None:
        """Scrape the processes on these ports, each with these target labels (which win over the scraped
        series' own: honor_labels is false)."""
        groups = [{"targets": [f"127.0.0.1:{port}"], "labels": labels} for port, labels in sorted(targets.items())]
        temporary = self.targets.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups))
        temporary.replace(self.targets)

    def queries(self) -> list[str]:
        if not self.query_log.exists():
            return []
        return [json.loads(line)["params"]["query"] for line in self.query_log.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not PROMETHEUS.exists():
        pytest.skip("Debian's prometheus is not installed (apt-get install prometheus; .ci/run installs it)")
    root = tmp_path_factory.mktemp("prometheus")
    port, targets, query_log = free_port(), root / "targets" / "wrappers.json", root / "queries.log"
    targets.parent.mkdir()
    targets.write_text("[]")
    config = {"global": {"scrape_interval": "1s", "query_log_file": str(query_log)},
              "scrape_configs": [{"job_name": "wrappers", "file_sd_configs": [
                  {"files": [str(targets.parent / "*.json")], "refresh_interval": "1s"}]}]}
    (root / "prometheus.yml").write_text(json.dumps(config))
    with open(root / "prometheus.log", "wb") as log:
        process = subprocess.Popen([str(PROMETHEUS), f"--config.file={root / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 30, process)
        yield PrometheusServer(f"http://127.0.0.1:{port}", targets, query_log)
    finally:
        stop_process(process)


def scraped(prometheus: PrometheusServer, namespace: str, model: str, by_version: dict[str, WrapperProcess]) -> None:
    prometheus.point({wrapper.port: {"namespace": namespace, "model": model, "version": version}
                      for version, wrapper in by_version.items()})


def caught_up(deps: Callable[..., Deps], urls: dict[str, WrapperProcess], slug: str, prometheus_url: str,
              **settings: Any) -> Figures:
    """What one look reads from Prometheus, once it equals what it reads from the pods' `/metrics` (the next
    scrapes catch up)."""
    plain, counted = deps(urls, **settings).target, deps(urls, prometheus_url=prometheus_url, **settings).target
    deadline, pair = time.monotonic() + 15, None
    while True:
        with contextlib.suppress(Retryable):  # no series of the candidate scraped yet
            pair = (plain.rollout_figures(slug, plain.observe()), counted.rollout_figures(slug, counted.observe()))
            if pair[0] == pair[1]:
                return pair[1]
        assert time.monotonic() < deadline, f"the pods' and Prometheus' figures: {pair}"
        time.sleep(0.5)
