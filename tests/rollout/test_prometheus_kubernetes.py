"""The Kubernetes target reading a rollout's figures from a real Prometheus (`PROMETHEUS_URL`), in the emulated
cluster: they equal what the same target reads from the pods' own `/metrics` once Prometheus has scraped them
(candidate, live and the live wrapper's comparison counts), a failing canary is rolled back on them, and a shadow
is promoted on the comparison counts Prometheus has of the live wrapper.

Prometheus scrapes the module's real wrapper processes (`test_kubernetes_rollout.wrappers`), each with the target
labels a `kubernetes-pods` job would give the pods of its version: `namespace`, and `model` and `version` as the
wrapper of that version says them (the processes serve other registered names; target labels win over the
scraped ones, as `honor_labels: false` does). That is the Prometheus side of the target's pod -> URL seam."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from mlflow import MlflowClient

from devstack.models import LoggedModel, register_versions
from devstack.servers import LocalMlflow
from model_wrapper.contract.naming import model_slug
from tests.peers import KubernetesPeer
from tests.rollout.conftest import PrometheusServer, caught_up, rollout_contract, scraped, tags
from tests.rollout.test_kubernetes_rollout import (  # noqa: F401 - fixtures
    FAILING,
    SHADOW,
    Plane,
    Wrappers,
    candidate_objects,
    deploy_live,
    fresh_deps,
)
from tests.wrapper.conftest import WrapperProcess, model_env
from watcher.clients.scrape import metrics_text, parse_comparison
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once


@pytest.fixture(scope="module")
def wrappers(mlflow_server: LocalMlflow, iris: LoggedModel, flaky_iris: Callable[[str, str], str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wrappers]:
    """As `test_kubernetes_rollout.wrappers`, but only the live wrapper looks at the shadow config (there, the
    candidates read it too, and a good one told to mirror to itself would count its own requests forever)."""
    name = "k8s-prometheus-flaky-files"
    version = flaky_iris(name, rollout_contract(FAILING))
    found = MlflowClient().get_model_version(name, version)
    flaky = LoggedModel(name, version, found.source, str(found.run_id), None)
    configs = tmp_path_factory.mktemp("shadow")
    models = (iris, iris, flaky)
    processes = [WrapperProcess(model_env(model, mlflow_server, SHADOW_CONFIG=str(configs / f"{role}.json"))).start()
                 for role, model in zip(("live", "good", "flaky"), models, strict=True)]
    slugs = {process.port: model_slug(model.name) for process, model in zip(processes, models, strict=True)}
    try:
        for process in processes:
            process.wait_until(process.base(slugs[process.port]) + "ready")
        yield Wrappers(*processes, flaky_model=flaky, shadow_file=configs / "live.json", slugs=slugs)
    finally:
        for process in processes:
            process.stop()


def test_a_failing_canary_is_rolled_back_on_prometheus_figures_equal_to_the_pods_own(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,  # noqa: F811
    iris: LoggedModel, production: dict[str, str], wrappers: Wrappers, prometheus: PrometheusServer,
) -> None:
    urls = {"1": wrappers.live, "2": wrappers.flaky}
    scraped(prometheus, namespace, model_name, urls)
    nginx = {"ingress_class_name": "nginx"}
    slug = deploy_live(kube, fresh_deps(urls, **nginx), model_name, iris, production)
    flaky = register_versions(model_name, wrappers.flaky_model, tags=production)[0]
    assert flaky == "2"
    reconcile_once(fresh_deps(urls, prometheus_url=prometheus.url, **nginx))
    assert tags(model_name, flaky)["rollout_status"] == "canary 20%"

    Plane(kube, namespace, slug, urls, wrappers).send(200)
    figures = caught_up(fresh_deps, urls, slug, prometheus.url, **nginx)
    judged = reconcile_once(fresh_deps(urls, prometheus_url=prometheus.url, **nginx))

    assert figures.candidate.errors > 0 and figures.live.requests > 0
    assert judged.failed == 1, judged.failures
    after = tags(model_name, flaky)
    assert (after["deployment_status"], after["rollout_status"]) == ("failed", "rolled back")
    assert after["deployment_message"].startswith("rolled back: 5xx rate ")
    assert candidate_objects(kube, namespace, slug) == {}
    assert any(f'model="{model_name}"' in query and f'namespace="{namespace}"' in query
               for query in prometheus.queries()), "the target asked Prometheus, narrowed to its namespace"


def test_a_shadow_is_promoted_on_the_live_wrappers_comparison_counts_as_prometheus_has_them(
    fresh_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,  # noqa: F811
    iris: LoggedModel, production: dict[str, str], wrappers: Wrappers, prometheus: PrometheusServer,
    variant: Callable[..., str],
) -> None:
    nginx = {"ingress_class_name": "nginx"}
    slug = deploy_live(kube, fresh_deps({}, **nginx), model_name, iris, production)
    good = variant(model_name, iris, {"contract.yaml": rollout_contract(SHADOW).encode()}, production)
    urls = {"1": wrappers.live, good: wrappers.good}
    scraped(prometheus, namespace, model_name, urls)
    reconcile_once(fresh_deps(urls, prometheus_url=prometheus.url, **nginx))
    assert tags(model_name, good)["rollout_status"] == "shadowing"
    live = f"http://127.0.0.1:{wrappers.live.port}"
    try:
        wrappers.shadow_file.write_text(json.dumps({"candidate": f"http://127.0.0.1:{wrappers.good.port}",
                                                    "version": good, "sample": 1.0}))
        before = parse_comparison(metrics_text(live), good).compared
        time.sleep(1.1)  # the config is looked at once a second (and Prometheus' scrapes just looked)
        Plane(kube, namespace, slug, urls, wrappers).send(40)
        deadline = time.monotonic() + 20
        while parse_comparison(metrics_text(live), good).compared < before + 40:
            assert time.monotonic() < deadline, "the live wrapper never compared its mirrored requests"
            time.sleep(0.1)
        figures = caught_up(fresh_deps, urls, slug, prometheus.url, **nginx)
        kube.advance(31)
        promoted = reconcile_once(fresh_deps(urls, prometheus_url=prometheus.url, **nginx))
    finally:
        wrappers.shadow_file.unlink(missing_ok=True)

    assert figures.comparison.compared >= 40 and figures.comparison.agreement == 1.0
    assert promoted.failed == 0, promoted.failures
    assert (tags(model_name, good)["rollout_status"], tags(model_name, good)["deployment_status"]) == \
        ("promoted", "deployed")
    assert "agreement 100.0% of " in tags(model_name, good)["rollout_summary"]
    assert any(f'model="{model_name}", version="1", candidate="{good}"' in query for query in prometheus.queries()), \
        "the comparison counts were Prometheus' series of the live wrapper's"
