"""A pass with a deadline (PASS_DEADLINE_SECONDS, the CronJob's activeDeadlineSeconds less its grace period)
starts no deployment that could outlast it: the model is left to the next pass, which deploys it, instead of
being cut off half-way by SIGTERM every time. The pass's stopwatch is injected (`Deps.monotonic`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from devstack.models import LoggedModel, register_versions
from tests.peers import KubernetesPeer
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once


def test_a_pass_leaves_a_deployment_that_could_outlast_its_deadline_to_the_next_pass(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    for name in (f"{model_name}-a", f"{model_name}-b"):
        register_versions(name, iris, tags=production)
    settings = make_settings()
    settings = make_settings(pass_deadline_seconds=settings.model_worst_case_seconds + 200)
    elapsed = [0.0]

    def each_model_takes_five_minutes() -> None:  # told before each action the pass performs
        elapsed[0] += 300

    deps = replace(make_deps(settings), monotonic=lambda: elapsed[0], progress=each_model_takes_five_minutes)

    first = reconcile_once(deps)

    assert (first.deployed, first.deferred, first.failed) == (1, 1, 0), first.failures
    assert "deferred=1" in first.summary()
    assert len(kube.objects("deployments", namespace)) == 1, "the second model was not started"

    elapsed[0] = 0.0
    second = reconcile_once(deps)

    assert (second.deployed, second.deferred, second.unchanged) == (1, 0, 1), second.failures
    assert len(kube.objects("deployments", namespace)) == 2


def test_without_a_deadline_a_pass_takes_every_model(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str],
) -> None:
    for name in (f"{model_name}-a", f"{model_name}-b"):
        register_versions(name, iris, tags=production)
    elapsed = [0.0]

    def each_model_takes_an_hour() -> None:
        elapsed[0] += 3600

    deps = replace(make_deps(), monotonic=lambda: elapsed[0], progress=each_model_takes_an_hour)

    report = reconcile_once(deps)

    assert (report.deployed, report.deferred) == (2, 0), report.failures
