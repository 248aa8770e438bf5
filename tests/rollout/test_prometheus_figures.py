"""A rollout's figures read from a real Prometheus (`PROMETHEUS_URL`) instead of the wrappers' own `/metrics`, on the
local target with real wrapper processes under load: a failing canary is rolled back and a good shadow promoted
on Prometheus' series (its query log shows the watcher's queries); the figures equal the scrape path's figures
of the same wrappers once Prometheus has scraped them, p99 as Prometheus' own `histogram_quantile` says; and a
Prometheus that cannot be reached, refuses the query or has no series of the candidate holds the step with the
reason, never a verdict, while a person's abort needs no figures.

One Debian `prometheus` per module (`conftest.prometheus`), scraping every second the wrapper processes the local
target records in its state directory, written to its `file_sd_configs` file as they come and go. The Kubernetes
target's reading of Prometheus is in `test_prometheus_kubernetes.py`."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from devstack.models import LoggedModel
from devstack.servers import free_port
from model_wrapper.contract.naming import model_slug
from tests.rollout.conftest import Callers, PrometheusServer, rollout_contract, run_until, tags
from tests.rollout.test_local_rollout import HOLDING, candidate_state, deploy_live
from watcher.clients.prometheus import Prometheus
from watcher.clients.scrape import wrapper_figures
from watcher.config.settings import Settings, load_settings
from watcher.entry import commands
from watcher.entry.cli import build_deps
from watcher.errors import SettingsInvalid
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

FAILING = """\
  strategy: canary
  steps: [20, 50]
  analysis: {interval: 1, min_requests: 15, max_error_rate: 0.01}
"""


@pytest.fixture
def discovered(prometheus: PrometheusServer, state_dir: Path) -> Iterator[PrometheusServer]:
    """Prometheus scraping this test's wrapper processes as they come and go."""
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(0.3):
            prometheus.point({port: {} for port in recorded_ports(state_dir)})

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    yield prometheus
    stop.set()
    thread.join()


@pytest.fixture
def prometheus_deps(make_settings: Callable[..., Settings], state_dir: Path,
                    prometheus: PrometheusServer) -> Callable[..., Deps]:
    """A fresh watcher each call on the local target, reading the figures from `url` (the module's Prometheus)."""
    def make(url: str | None = None, **overrides: Any) -> Deps:
        return build_deps(make_settings(deploy_target="local", local_state_dir=state_dir, rollout_timeout_seconds=120,
                                        prometheus_url=url or prometheus.url, **overrides),
                          clock=lambda: datetime.now(UTC))
    return make


def test_a_failing_canary_is_rolled_back_on_the_figures_prometheus_scraped(
    prometheus_deps: Callable[..., Deps], discovered: PrometheusServer, state_dir: Path, model_name: str,
    iris: LoggedModel, production: dict[str, str], flaky_iris: Callable[[str, str], str],
) -> None:
    endpoint = deploy_live(prometheus_deps, model_name, iris, production)
    with Callers(endpoint) as callers:
        flaky = flaky_iris(model_name, rollout_contract(FAILING))
        MlflowClient().set_model_version_tag(model_name, flaky, *next(iter(production.items())))
        reconcile_once(prometheus_deps())
        assert tags(model_name, flaky)["rollout_status"] == "canary 20%"
        run_until(prometheus_deps, lambda: tags(model_name, flaky)["deployment_status"] == "failed")

    assert set(callers.statuses) == {200}, "the front answered the candidate's failures from the live version"
    after = tags(model_name, flaky)
    assert after["rollout_status"] == "rolled back"
    assert after["deployment_message"].startswith("rolled back: 5xx rate ")
    assert candidate_state(state_dir, model_slug(model_name)) is None
    asked = [query for query in discovered.queries() if f'model="{model_name}"' in query]
    assert asked and all(f'version=~"{flaky}|1"' in query for query in asked), "the figures came from Prometheus"


def test_a_good_shadow_is_promoted_on_the_figures_prometheus_scraped(
    prometheus_deps: Callable[..., Deps], discovered: PrometheusServer, state_dir: Path, model_name: str,
    iris: LoggedModel, production: dict[str, str], variant: Callable[..., str],
) -> None:
    shadow = "  strategy: shadow\n  sample: 1.0\n  analysis: {interval: 1, min_requests: 15, max_error_rate: 0.01, " \
             "max_p99_ms: 2000, min_agreement: 0.95}\n"
    endpoint = deploy_live(prometheus_deps, model_name, iris, production)
    with Callers(endpoint) as callers:
        good = variant(model_name, iris, {"contract.yaml": rollout_contract(shadow).encode()}, production)
        reconcile_once(prometheus_deps())
        assert tags(model_name, good)["rollout_status"] == "shadowing"
        run_until(prometheus_deps, lambda: tags(model_name, good).get("rollout_status") == "promoted")

    assert set(callers.statuses) == {200}
    assert tags(model_name, good)["deployment_status"] == "deployed"
    assert "agreement 100.0% of " in tags(model_name, good)["rollout_summary"], "the front's comparison counts"
    assert any(f'model="{model_name}"' in query and f'version=~"{good}|1"' in query for query in discovered.queries())


def test_prometheus_figures_equal_the_wrappers_own_and_a_prometheus_that_fails_holds_the_step(
    prometheus_deps: Callable[..., Deps], discovered: PrometheusServer, state_dir: Path, model_name: str,
    iris: LoggedModel, production: dict[str, str], variant: Callable[..., str],
) -> None:
    slug = model_slug(model_name)
    endpoint = deploy_live(prometheus_deps, model_name, iris, production)
    second = variant(model_name, iris, {"contract.yaml": rollout_contract(HOLDING).encode()}, production)
    reconcile_once(prometheus_deps())
    with Callers(endpoint):
        time.sleep(3)
    candidate, live = candidate_state(state_dir, slug), json.loads((state_dir / f"{slug}.json").read_text())
    assert candidate is not None
    own = {version: wrapper_figures(f"http://127.0.0.1:{state['port']}")
           for version, state in ((second, candidate), ("1", live))}
    source = Prometheus(discovered.url)
    deadline = time.monotonic() + 15
    while (seen := source.wrappers(model_name, (int(second), 1))) != own:  # the next scrapes catch up
        assert time.monotonic() < deadline, f"Prometheus {seen} != the wrappers' own {own}"
        time.sleep(0.5)
    assert own[second].requests > 0 and own["1"].requests > own[second].requests
    quantile = discovered_quantile(discovered.url, model_name, second)
    assert own[second].p99_ms == pytest.approx(quantile * 1000), "our histogram_quantile is Prometheus' own"
    before = tags(model_name, second)

    with_figures = reconcile_once(prometheus_deps())
    assert with_figures.failed == 0 and tags(model_name, second)["rollout_summary"].startswith(
        f"candidate v{second}: {own[second].requests} requests, 5xx 0.0%")
    gone = reconcile_once(prometheus_deps(url=f"http://127.0.0.1:{free_port()}"))  # nobody listens there
    down = tags(model_name, second)
    refused = reconcile_once(prometheus_deps(prometheus_matchers='job=~"("'))  # Prometheus: a bad regex
    bad = tags(model_name, second)
    unseen = reconcile_once(prometheus_deps(prometheus_matchers='job="elsewhere"'))  # scraping other pods
    empty = tags(model_name, second)

    assert (gone.failed, refused.failed, unseen.failed) == (0, 0, 0), (gone.failures, refused.failures)
    for held in (down, bad, empty):
        assert (held["deployment_status"], held["rollout_status"]) == ("deploying", "canary 30%")
        assert held["rollout_step"] == before["rollout_step"], "the step holds where it was"
    assert down["rollout_summary"].startswith("no figures this pass: could not query Prometheus at 127.0.0.1 (")
    assert bad["rollout_summary"].startswith("no figures this pass: Prometheus at 127.0.0.1 refused the query (400: ")
    assert "error parsing regexp" in bad["rollout_summary"]
    assert empty["rollout_summary"] == (f"no figures this pass: Prometheus at 127.0.0.1 has no series of "
                                        f"{model_name} version {second} yet (is it scraping the model's pods? "
                                        "see docs/lifecycle.md)")
    closed = f"http://127.0.0.1:{free_port()}"
    assert commands.decide_rollout(prometheus_deps(url=closed), model_name, "abort", out=lambda _: None) == 0
    aborted = tags(model_name, second)
    assert (aborted["deployment_status"], aborted["rollout_status"]) == ("failed", "rolled back"), \
        "a person's decision needs no figures"
    assert aborted["deployment_message"].startswith("rolled back: aborted by a person")
    assert "decided without figures (could not query Prometheus at 127.0.0.1 (" in aborted["deployment_message"]


@pytest.mark.parametrize(("variable", "value"), [("prometheus_url", "prometheus:9090"),
                                                 ("prometheus_matchers", "namespace=models"),
                                                 ("prometheus_matchers", 'namespace="models"}) or vector(1')])
def test_a_prometheus_setting_that_is_no_url_or_no_label_matchers_stops_the_watcher_naming_it(
    variable: str, value: str,
) -> None:
    with pytest.raises(SettingsInvalid, match=variable.upper()):
        load_settings(mlflow_tracking_uri="http://m:5000", **{variable: value})


def test_the_figures_are_narrowed_to_the_namespace_on_kubernetes_unless_the_matchers_say_otherwise() -> None:
    def selector(**overrides: str) -> str:
        return load_settings(mlflow_tracking_uri="http://m:5000", k8s_name_space="models", **overrides) \
            .prometheus_selector

    assert selector() == 'namespace="models"'
    assert selector(prometheus_matchers="") == ""
    assert selector(prometheus_matchers='job="pods"') == 'job="pods"'
    assert selector(deploy_target="local", model_wrapper_image=sys.executable) == ""


def recorded_ports(state_dir: Path) -> set[int]:
    """The ports of the wrapper processes the local target records in `state_dir` (live and candidates)."""
    ports = set()
    for path in [*state_dir.glob("*.json"), *state_dir.glob("candidates/*.json")]:
        try:
            ports.add(int(json.loads(path.read_text())["port"]))
        except (OSError, ValueError, KeyError):
            continue  # being written: the next round has it
    return ports


def discovered_quantile(url: str, model: str, version: str) -> float:
    """Prometheus' own p99 of the version's prediction latency (promql/quantile.go)."""
    query = (f'histogram_quantile(0.99, sum by (le) (model_wrapper_request_duration_seconds_bucket{{model="{model}", '
             f'version="{version}", endpoint=~"predict|invocations|root_invocations"}}))')
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}") as answer:
        return float(json.loads(answer.read())["data"]["result"][0]["value"][1])
