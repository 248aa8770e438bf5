"""The request budget of a steady-state pass: 200 models, 2,000 versions, 20 selected.

Requests are counted where they arrive: the MLflow server's access log, kmock's request journal
and moto's S3 request log. A pass with nothing to do reads one search page per page of selected
versions (nothing per unselected version), lists each managed kind once, and writes nothing; nor
does it render any live model's manifests (it compares inputs digests), so its cost stays flat.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from mlflow import MlflowClient

from devstack.models import LoggedModel, register_versions
from devstack.servers import LocalMlflow
from tests.peers import KubernetesPeer, MlflowAccessLog, s3_requests
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.render.manifests import Release, Rendered, Renderer

MODELS, VERSIONS_EACH, SELECTED = 200, 10, 20
SEARCH = "/api/2.0/mlflow/model-versions/search"


@pytest.fixture(scope="module")
def big_registry(mlflow_server: LocalMlflow, iris: LoggedModel) -> str:
    """200 models of 10 versions each; the last version of the first 20 models carries the returned tag value.

    The versions share the iris model's files, registered by their S3 location (the cheapest create).
    """
    run = uuid.uuid4().hex[:8]
    selected = f"budget-{run}"
    client = MlflowClient()
    files = replace(iris, source=client.get_logged_model(iris.source.removeprefix("models:/")).artifact_location)

    def one_model(index: int) -> None:
        name = f"budget-{run}-{index:03d}"
        register_versions(name, files, VERSIONS_EACH - 1, client=client)
        register_versions(name, files, tags={"deploy": selected} if index < SELECTED else None, client=client)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one_model, range(MODELS)))
    assert len(client.search_model_versions(f"name LIKE 'budget-{run}-%'", max_results=5000)) == MODELS * VERSIONS_EACH
    return selected


def test_steady_state_pass_reads_one_search_page_per_page_of_selected_versions_and_writes_nothing(
    big_registry: str, make_settings: Callable[..., Settings], make_deps: Callable[..., Deps], kube: KubernetesPeer,
    namespace: str, mlflow_server: LocalMlflow, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = reconcile_once(make_deps(make_settings(selector=f"tag:deploy={big_registry}")))
    assert (first.found, first.deployed, first.failed) == (SELECTED, SELECTED, 0), first.failures

    for page_size in (7, 1000):
        deps = make_deps(make_settings(selector=f"tag:deploy={big_registry}", search_page_size=page_size))
        mlflow = MlflowAccessLog(mlflow_server.workdir / "server.log")
        mlflow.mark()
        kube_before = len(kube.requests(namespace))

        renders = _count_renders(monkeypatch)
        with s3_requests() as s3:
            steady = reconcile_once(deps)

        assert (steady.found, steady.unchanged, steady.failed) == (SELECTED, SELECTED, 0)
        assert [path.split("?")[0] for _, path in mlflow.since()] == [SEARCH] * math.ceil(SELECTED / page_size)
        kube_requests = kube.requests(namespace)[kube_before:]
        assert Counter((r.method.value, r.resource.plural, r.name) for r in kube_requests if r.resource) == {
            ("GET", "deployments", None): 1, ("GET", "services", None): 1, ("GET", "ingresses", None): 1,
            ("GET", "horizontalpodautoscalers", None): 1, ("GET", "poddisruptionbudgets", None): 1,
            ("GET", "networkpolicies", None): 1}
        assert len(kube_requests) == 6
        assert s3 == []
        assert renders == [], "a steady-state pass compares inputs digests; it renders no live model"


def _count_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The releases rendered from now on (the project's own seam: what grows with the deployed models)."""
    rendered: list[str] = []
    original = Renderer.render

    def counting(self: Renderer, release: Release, *, validate: bool = True) -> Rendered:
        rendered.append(str(release))
        return original(self, release, validate=validate)

    monkeypatch.setattr(Renderer, "render", counting)
    return rendered
