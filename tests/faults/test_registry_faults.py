"""The MLflow registry failing: unreachable at start, gone mid-pass, or answering 5xx to one call.

The first two stop the session's real `mlflow server` (and start it again in a `finally`); the
third puts a fault-injecting proxy between the watcher and the real server.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devstack.models import log_iris
from devstack.servers import LocalMlflow, free_port
from model_wrapper.contract.naming import model_slug
from tests.faults.proxy import FaultProxy
from tests.faults.support import (
    PLURALS,
    error_lines,
    managed_objects,
    ready_now,
    run_watcher,
    start_watcher,
    tags,
    watcher_env,
)
from tests.peers import KubernetesPeer, all_ready
from watcher.config.settings import Settings
from watcher.entry.cli import main
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once


@pytest.mark.usefixtures("_restore_logging")
def test_registry_unreachable_at_start_exits_1_with_one_clear_line_and_touches_nothing(
    make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    # Nothing listens there: to the watcher, the same as a stopped server (the next test stops the real one).
    dead = f"http://127.0.0.1:{free_port()}"
    for key, value in watcher_env(make_settings(mlflow_tracking_uri=dead)).items():
        monkeypatch.setenv(key, value)
    code = main(["run-once"])
    stderr = capfd.readouterr().err
    assert code == 1
    (line,) = error_lines(stderr)
    assert "pass aborted: MLflow registry unreachable" in line and f"port={dead.rsplit(':', 1)[1]}" in line
    assert "Traceback" not in stderr
    assert kube.requests(namespace) == [], "nothing may be read or written on the cluster"


def test_registry_gone_mid_pass_aborts_the_pass_and_leaves_no_model_half_applied(
    mlflow_server: LocalMlflow, make_settings: Callable[..., Settings], make_deps: Callable[..., Deps],
    kube: KubernetesPeer, namespace: str, model_name: str, production: dict[str, str],
) -> None:
    names = [f"{model_name}-{i}" for i in range(3)]
    for name in names:
        log_iris(name, kind="tree", tags=production)
    kube.set_rollout_policy(lambda deployment: None)  # rollouts wait until the test says they are done
    watcher = start_watcher(["run-once"], watcher_env(make_settings(rollout_timeout_seconds=60)))
    try:
        first = kube.first_deployment(namespace)
        mlflow_server.stop()
        ready_now(kube, namespace, first)
        _, stderr = watcher.communicate(timeout=90)
    finally:
        watcher.kill()
        mlflow_server.start()
    assert watcher.returncode == 1, stderr
    (line,) = error_lines(stderr)[-1:]
    assert "pass aborted" in line and "MLflow registry unreachable" in line
    objects = managed_objects(kube, namespace)
    for name in names:  # all of its objects, or none
        present = [plural for plural, found in objects.items() if model_slug(name) in found]
        assert present in ([], list(PLURALS)), (name, present)

    kube.set_rollout_policy(all_ready)
    report = reconcile_once(make_deps())
    assert report.failed == 0, report.failures
    assert {tags(name)["deployment_status"] for name in names} == {"deployed"}
    assert managed_objects(kube, namespace) == {plural: {model_slug(n) for n in names} for plural in PLURALS}


def test_one_registry_call_answering_503_is_retried_with_backoff_then_only_that_model_fails(
    mlflow_server: LocalMlflow, make_settings: Callable[..., Settings], make_deps: Callable[..., Deps],
    kube: KubernetesPeer, namespace: str, model_name: str, production: dict[str, str],
) -> None:
    broken, healthy = f"{model_name}-broken", f"{model_name}-healthy"
    log_iris(broken, kind="tree", tags=production)
    log_iris(healthy, kind="tree", tags=production)
    proxy = FaultProxy(mlflow_server.tracking_uri).start()
    settings = make_settings(mlflow_tracking_uri=proxy.url)
    try:
        rule = proxy.fail(rf"^GET /api/2\.0/mlflow/model-versions/get-download-uri\?name={broken}&", 503)
        # As the CronJob runs it: the CLI's own bounded MLflow retries apply.
        result = run_watcher(["run-once"], watcher_env(settings))
        assert result.returncode == 0, result.stderr
        assert len(rule.hits) == 3, "one call and two retries, then give up"
        gaps = [later - earlier for earlier, later in zip(rule.hits, rule.hits[1:], strict=False)]
        assert gaps[1] > gaps[0] and gaps[1] >= 1.5, f"exponential back-off between retries: {gaps}"
        failed = tags(broken)
        assert failed["deployment_status"] == "failed" and failed["deployed"] == "false"
        assert failed["deployment_message"].endswith(f"{broken} v1: too many 503 error responses; will retry on the "
                                                     "next pass")
        assert failed["deployment_attempt"].endswith(" failures=1"), "a transient failure is retried on the next pass"
        assert tags(healthy)["deployment_status"] == "deployed"
        assert model_slug(broken) not in kube.objects("deployments", namespace)

        proxy.clear()
        report = reconcile_once(make_deps(settings))
    finally:
        proxy.stop()
    assert (report.deployed, report.unchanged, report.failed) == (1, 1, 0), report.failures
    assert tags(broken)["deployment_status"] == "deployed"
