"""Progressive delivery on the local target, with real wrapper processes under a steady load of callers: the
candidate runs as its own process beside the live one behind the same endpoint; a failing candidate is rolled
back and a good one promoted by the figures, every caller request answered throughout; the state lives in tags,
so fresh watcher processes (and one stopped mid-look) resume the same step; a newer version replaces the
candidate, and a deselected candidate is stopped while the live version keeps serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from devstack.models import LoggedModel, register_versions
from devstack.servers import LocalMlflow
from model_wrapper.contract.naming import model_slug
from tests.reconcile.test_local_target import _running, get_json
from tests.rollout.conftest import SHADOW, Callers, rollout_contract, run_until, tags
from watcher.entry import commands
from watcher.errors import Stopping
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

CANARY = """\
  strategy: canary
  steps: [20, 50]
  analysis: {interval: 1, min_requests: 15, max_error_rate: 0.01, min_agreement: 0.95}
"""
HOLDING = """\
  strategy: canary
  steps: [30]
  analysis: {interval: 3600, min_requests: 1}
"""


def candidate_state(state_dir: Path, slug: str) -> dict[str, object] | None:
    path = state_dir / "candidates" / f"{slug}.json"
    return json.loads(path.read_text()) if path.exists() else None


def live_version(state_dir: Path, slug: str) -> str:
    endpoint = json.loads((state_dir / f"{slug}.json").read_text())["endpoint"]
    return str(get_json(f"{endpoint}metadata")["version"])


def logged_metrics(name: str, version: str) -> dict[str, float]:
    client = MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    return {key: value for key, value in client.get_run(run_id).data.metrics.items() if key.startswith("rollout_")}


def deploy_live(deps: Callable[[], Deps], name: str, iris: LoggedModel, production: dict[str, str]) -> str:
    register_versions(name, iris, tags=production)
    first = reconcile_once(deps())
    assert (first.deployed, first.failed) == (1, 0), first.failures
    return str(tags(name, 1)["model_endpoint"])


def test_a_candidate_failing_one_request_in_five_is_rolled_back_and_no_caller_request_fails(
    rollout_deps: Callable[[], Deps], state_dir: Path, model_name: str, iris: LoggedModel,
    production: dict[str, str], flaky_iris: Callable[[str, str], str],
) -> None:
    slug = model_slug(model_name)
    endpoint = deploy_live(rollout_deps, model_name, iris, production)
    with Callers(endpoint) as callers:
        flaky = flaky_iris(model_name, rollout_contract(CANARY))
        MlflowClient().set_model_version_tag(model_name, flaky, *next(iter(production.items())))
        reconcile_once(rollout_deps())
        assert tags(model_name, flaky)["rollout_status"] == "canary 20%"
        assert tags(model_name, flaky)["deployment_status"] == "deploying"
        candidate = candidate_state(state_dir, slug)
        assert candidate is not None and _running(candidate["pid"])  # type: ignore[arg-type]
        run_until(rollout_deps, lambda: tags(model_name, flaky)["deployment_status"] == "failed")

    assert callers.statuses.count(200) > 50 and set(callers.statuses) == {200}, "every caller was answered"
    after = tags(model_name, flaky)
    assert after["rollout_status"] == "rolled back"
    assert after["deployment_message"].startswith("rolled back: 5xx rate ")
    assert "version 1 served throughout" in after["deployment_message"]
    assert "failed answers served by live instead" in after["rollout_summary"]
    assert candidate_state(state_dir, slug) is None and not _running(candidate["pid"])  # type: ignore[arg-type]
    assert live_version(state_dir, slug) == "1" and tags(model_name, 1)["deployment_status"] == "deployed"
    assert logged_metrics(model_name, flaky)["rollout_error_rate"] > 0.01
    steady = reconcile_once(rollout_deps())  # the verdict is remembered: no second trial
    assert (steady.updated, steady.failed) == (0, 0) and candidate_state(state_dir, slug) is None


def test_a_good_candidate_is_shadowed_then_promoted_by_its_figures(
    rollout_deps: Callable[[], Deps], state_dir: Path, model_name: str, iris: LoggedModel,
    production: dict[str, str], shadowed_iris: LoggedModel,
) -> None:
    slug = model_slug(model_name)
    endpoint = deploy_live(rollout_deps, model_name, iris, production)
    with Callers(endpoint) as callers:
        good = register_versions(model_name, shadowed_iris, tags=production)[0]
        reconcile_once(rollout_deps())
        assert tags(model_name, good)["rollout_status"] == "shadowing"
        assert live_version(state_dir, slug) == "1", "a shadow answers no caller"
        run_until(rollout_deps, lambda: tags(model_name, good).get("rollout_status") == "promoted")
        served_after = live_version(state_dir, slug)

    assert set(callers.statuses) == {200}
    assert served_after == good and tags(model_name, good)["deployment_status"] == "deployed"
    assert tags(model_name, good)["model_endpoint"] == endpoint, "the same endpoint throughout"
    assert tags(model_name, 1)["deployment_status"] == "superseded"
    assert "agreement 100.0% of " in tags(model_name, good)["rollout_summary"]
    assert logged_metrics(model_name, good)["rollout_agreement"] == 1.0
    assert candidate_state(state_dir, slug) is None


def test_a_candidate_that_disagrees_with_live_is_rolled_back_on_the_compared_answers(
    rollout_deps: Callable[[], Deps], state_dir: Path, model_name: str, iris: LoggedModel,
    production: dict[str, str], bad_iris: LoggedModel, variant: Callable[..., str],
) -> None:
    slug = model_slug(model_name)
    endpoint = deploy_live(rollout_deps, model_name, iris, production)
    with Callers(endpoint) as callers:
        # The shuffled model's files (it learnt nothing), with a contract that shadows it.
        shuffled = variant(model_name, bad_iris, {"contract.yaml": rollout_contract(SHADOW).encode()}, production)
        reconcile_once(rollout_deps())
        assert tags(model_name, shuffled)["rollout_status"] == "shadowing"
        run_until(rollout_deps, lambda: tags(model_name, shuffled)["deployment_status"] == "failed")

    assert set(callers.statuses) == {200}
    after = tags(model_name, shuffled)
    assert after["rollout_status"] == "rolled back"
    assert after["deployment_message"].startswith("rolled back: agreement with live ")
    assert "< 95.0% required" in after["deployment_message"]
    assert candidate_state(state_dir, slug) is None and live_version(state_dir, slug) == "1"


def test_a_watcher_stopped_mid_analysis_leaves_the_step_and_the_next_resumes_it(
    rollout_deps: Callable[[], Deps], state_dir: Path, model_name: str, iris: LoggedModel,
    production: dict[str, str], variant: Callable[..., str],
) -> None:
    slug = model_slug(model_name)
    endpoint = deploy_live(rollout_deps, model_name, iris, production)
    with Callers(endpoint) as callers:
        good = variant(model_name, iris, {"contract.yaml": rollout_contract(CANARY).encode()}, production)
        reconcile_once(rollout_deps())
        started = tags(model_name, good)
        candidate = candidate_state(state_dir, slug)

        stopped = rollout_deps()
        figures = stopped.target.rollout_figures  # type: ignore[attr-defined]

        def stop_while_reading(*args: object) -> object:
            figures(*args)
            raise Stopping("SIGTERM")  # what the watch loop's handler raises in a wait

        stopped.target.rollout_figures = stop_while_reading  # type: ignore[attr-defined]
        with pytest.raises(Stopping):
            reconcile_once(stopped)

        assert tags(model_name, good) == started, "a stopped look writes nothing"
        assert candidate_state(state_dir, slug) == candidate
        reconcile_once(rollout_deps())
        resumed = tags(model_name, good)
        assert resumed["rollout_step"].split()[:2] == started["rollout_step"].split()[:2] or \
            resumed["rollout_status"] == "canary 50%", "the same step, held or finished; never begun again"
        assert candidate_state(state_dir, slug) == candidate, "the same candidate process"
        run_until(rollout_deps, lambda: tags(model_name, good).get("rollout_status") == "promoted")

    assert set(callers.statuses) == {200}
    assert live_version(state_dir, slug) == good


def test_a_newer_version_replaces_the_candidate_and_a_deselected_one_is_stopped(
    rollout_deps: Callable[[], Deps], state_dir: Path, model_name: str, iris: LoggedModel,
    production: dict[str, str], variant: Callable[..., str],
) -> None:
    slug = model_slug(model_name)
    endpoint = deploy_live(rollout_deps, model_name, iris, production)
    files = {"contract.yaml": rollout_contract(HOLDING).encode()}
    with Callers(endpoint) as callers:
        second = variant(model_name, iris, files, production)
        reconcile_once(rollout_deps())
        first_candidate = candidate_state(state_dir, slug)
        assert first_candidate is not None and str(first_candidate["version"]) == second

        third = variant(model_name, iris, files, production)
        replaced = reconcile_once(rollout_deps())

        assert replaced.failed == 0, replaced.failures
        assert tags(model_name, second)["deployment_status"] == "superseded"
        now = candidate_state(state_dir, slug)
        assert now is not None and str(now["version"]) == third and not _running(first_candidate["pid"])  # type: ignore[arg-type]
        assert tags(model_name, third)["rollout_status"] == "canary 30%"

        for version in (second, third):
            MlflowClient().delete_model_version_tag(model_name, version, next(iter(production)))
        dropped = reconcile_once(rollout_deps())

    assert dropped.failed == 0, dropped.failures
    assert set(callers.statuses) == {200}
    assert candidate_state(state_dir, slug) is None and not _running(now["pid"])  # type: ignore[arg-type]
    assert tags(model_name, third)["deployment_status"] == "undeployed"
    assert live_version(state_dir, slug) == "1" and tags(model_name, 1)["deployment_status"] == "deployed"


def watch_then_sigterm(mlflow_server: LocalMlflow, state_dir: Path, production: dict[str, str],
                       passes: int) -> tuple[int, str]:
    """`python -m watcher watch` on the local target, polling every second, sent SIGTERM after `passes` passes;
    its exit code and log."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
    env.update({**mlflow_server.client_env(), "DEPLOY_TARGET": "local", "LOCAL_STATE_DIR": str(state_dir),
                "LOCAL_FRONT_PORT": "0", "SELECTOR": f"tag:deploy={production['deploy']}",
                "POLL_INTERVAL_SECONDS": "1", "LOG_FORMAT": "text", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    log = state_dir.parent / "watch.log"
    with log.open("wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "watcher", "watch"], env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while log.read_text().count("pass done") < passes and time.monotonic() < deadline:
                time.sleep(0.1)
            child.send_signal(signal.SIGTERM)
            code = child.wait(60)  # a bound for a loaded machine, not a measurement
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
    return code, log.read_text()


def test_a_person_aborts_one_candidate_and_promotes_the_next_while_status_shows_the_rollout(
    rollout_deps: Callable[[], Deps], state_dir: Path, model_name: str, iris: LoggedModel,
    production: dict[str, str], variant: Callable[..., str], mlflow_server: LocalMlflow,
) -> None:
    """Also: a real `watch` process stopped by SIGTERM between its looks leaves the step as it was."""
    slug = model_slug(model_name)
    endpoint = deploy_live(rollout_deps, model_name, iris, production)
    files = {"contract.yaml": rollout_contract(HOLDING).encode()}
    lines: list[str] = []
    with Callers(endpoint) as callers:
        second = variant(model_name, iris, files, production)
        reconcile_once(rollout_deps())
        assert commands.status(rollout_deps(), out=lines.append) == 0
        row = next(line for line in lines if line.split()[1:3] == [second, "deploying"])
        assert "(canary 30%)" in row and row.endswith("starting: no figures yet")

        held = tags(model_name, second)
        code, log = watch_then_sigterm(mlflow_server, state_dir, production, passes=3)
        assert code == 0, log[-2000:]
        assert tags(model_name, second)["rollout_step"] == held["rollout_step"], "the same step, from its start"
        assert "holding" in log and candidate_state(state_dir, slug)["version"] == int(second)  # type: ignore[index]

        assert commands.decide_rollout(rollout_deps(), model_name, "abort", out=lines.append) == 0
        assert lines[-1] == f"{model_name} v{second}: rolled back; version 1 serves"
        aborted = tags(model_name, second)
        assert (aborted["deployment_status"], aborted["rollout_status"]) == ("failed", "rolled back")
        assert aborted["deployment_message"].startswith("rolled back: aborted by a person")

        third = variant(model_name, iris, files, production)
        reconcile_once(rollout_deps())
        assert commands.decide_rollout(rollout_deps(), model_name, "promote", out=lines.append) == 0
        assert lines[-1] == f"{model_name} v{third}: promoted; version {third} serves"

    assert set(callers.statuses) == {200}
    assert live_version(state_dir, slug) == third and tags(model_name, third)["deployment_status"] == "deployed"
    assert tags(model_name, 1)["deployment_status"] == "superseded"
    assert commands.decide_rollout(rollout_deps(), model_name, "promote", out=lines.append) == 1
