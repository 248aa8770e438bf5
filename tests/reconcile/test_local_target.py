"""The local target (`DEPLOY_TARGET=local`) has the Kubernetes lifecycle, with real wrapper processes.

Each wrapper start loads a model (seconds), so the cases share one test and three starts: deploy,
an update at the same endpoint that never goes dark (the local front moves its route once the new
process is ready), supersede, a later run that finds the process again, a restart of a wrapper that
died, undeploy, after which no process (wrapper or front) is left.
Every process a test starts is stopped when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from devstack.models import LoggedModel, log_sklearn_model, register_versions
from model_wrapper.contract.naming import model_slug
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """The local target's state directory; every wrapper recorded there is stopped at the end."""
    directory = tmp_path / "state"
    yield directory
    for path in [*directory.glob("*.json"), *directory.glob("front/process.json")]:
        pid = json.loads(path.read_text()).get("pid")
        if isinstance(pid, int) and _running(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def local_deps(make_deps: Callable[..., Deps], make_settings: Callable[..., Settings],
               state_dir: Path) -> Callable[[], Deps]:
    """A fresh watcher process each call (as the CronJob starts one per pass), on the same state directory."""
    return lambda: make_deps(make_settings(deploy_target="local", local_state_dir=state_dir,
                                           rollout_timeout_seconds=120))


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def state(state_dir: Path, slug: str) -> dict[str, Any]:
    return dict(json.loads((state_dir / f"{slug}.json").read_text()))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class EndpointWatch(threading.Thread):
    """Keeps asking one endpoint (the model_endpoint tag's), as a client of the model would, and notes which
    version answered."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.asked, self.dark = 0, 0
        self.versions: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.versions.append(str(get_json(f"{self.endpoint}metadata")["version"]))
            except OSError:
                self.dark += 1
            self.asked += 1
            self.stop.wait(0.05)


def test_local_lifecycle_deploy_update_without_going_dark_found_again_restarted_and_undeployed(
    local_deps: Callable[[], Deps], state_dir: Path, model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    slug = model_slug(model_name)
    client = MlflowClient()
    register_versions(model_name, iris, tags=production)

    first = reconcile_once(local_deps())

    assert (first.deployed, first.failed) == (1, 0), first.failures
    v1 = state(state_dir, slug)
    front = json.loads((state_dir / "front" / "process.json").read_text())
    assert v1["endpoint"] == f"http://127.0.0.1:{front['port']}/{slug}/api/" != f"http://127.0.0.1:{v1['port']}/"
    assert client.get_model_version(model_name, "1").tags["model_endpoint"] == v1["endpoint"]
    assert get_json(f"{v1['endpoint']}metadata")["version"] in (1, "1")

    register_versions(model_name, iris, tags=production)
    watch = EndpointWatch(v1["endpoint"])
    watch.start()
    try:
        update = reconcile_once(local_deps())
    finally:
        watch.stop.set()
        watch.join()

    assert (update.updated, update.superseded, update.failed) == (1, 1, 0), update.failures
    assert watch.asked > 10 and watch.dark == 0
    assert watch.versions[0] == "1" and watch.versions[-1] == "2"
    assert watch.versions == sorted(watch.versions), "once v2 answered, v1 never did again"
    v2 = state(state_dir, slug)
    assert v2["pid"] != v1["pid"] and not _running(v1["pid"])
    assert v2["endpoint"] == v1["endpoint"], "one stable endpoint per model, as the Ingress gives"
    assert get_json(f"{v2['endpoint']}metadata")["version"] in (2, "2")
    v1_tags = client.get_model_version(model_name, "1").tags
    assert v1_tags["deployment_status"] == "superseded" and "model_endpoint" not in v1_tags
    assert client.get_model_version(model_name, "2").tags["model_endpoint"] == v2["endpoint"]

    again = reconcile_once(local_deps())  # a new watcher process: it finds the wrapper from the state directory

    assert (again.unchanged, again.deployed, again.updated) == (1, 0, 0)
    assert state(state_dir, slug)["pid"] == v2["pid"] and _running(v2["pid"])
    tags_v2 = client.get_model_version(model_name, "2").tags
    client.delete_model_version_tag(model_name, "2", "deployment_status")  # as if a pass died before recording

    recorded = reconcile_once(local_deps())

    assert (recorded.unchanged, recorded.failed) == (1, 0), recorded.failures
    assert client.get_model_version(model_name, "2").tags == tags_v2
    assert state(state_dir, slug)["pid"] == v2["pid"]

    os.killpg(v2["pid"], signal.SIGKILL)  # the wrapper died (OOM, a reboot): the next pass starts it again
    repaired = reconcile_once(local_deps())

    assert (repaired.updated, repaired.failed) == (1, 0), repaired.failures
    v2_again = state(state_dir, slug)
    assert v2_again["pid"] != v2["pid"] and answers(f"{v2_again['endpoint']}ready")

    client.delete_model_version_tag(model_name, "1", "deploy")
    client.delete_model_version_tag(model_name, "2", "deploy")
    gone = reconcile_once(local_deps())

    assert (gone.undeployed, gone.failed) == (1, 0)
    assert not _running(v2_again["pid"]) and not (state_dir / f"{slug}.json").exists()
    assert client.get_model_version(model_name, "2").tags["deployment_status"] == "undeployed"
    assert not _running(front["pid"]) and not answers(f"{v1['endpoint']}ready"), "the front went with the last model"


IMAGE_MODEL = """\
flavors:
  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.7}
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 28, 28]}}]'
"""
FIELDS_OVER_AN_IMAGE = "inputs:\n  x0: {type: number}\n"


def _requests(state_dir: Path, slug: str) -> dict[tuple[str, str], float]:
    """The wrapper's request counts by (endpoint, status), read from its /metrics (on its own port: the front
    routes only /<slug>/, as the Ingress does)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{state(state_dir, slug)['port']}/metrics", timeout=10) as page:
        return {(sample.labels["endpoint"], sample.labels["status"]): sample.value
                for family in text_string_to_metric_families(page.read().decode()) for sample in family.samples
                if sample.name == "model_wrapper_requests_total"}


def test_models_trained_on_arrays_deploy_on_fields_x0_to_xn_or_through_invocations_when_they_have_none(
    local_deps: Callable[[], Deps], state_dir: Path, model_name: str, production: dict[str, str],
    upload: Callable[[dict[str, str]], str],
) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from tests.wrapper.conformance import IMAGES, log_echo

    features, target = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, target)
    log_sklearn_model(model_name, model, features, contract=None, tags=production,
                      pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    image_name = f"{model_name}-image"
    image = log_echo(image_name, ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28), "img")])),
                     {"img": IMAGES})
    for key, value in production.items():
        MlflowClient().set_model_version_tag(image_name, image.version, key, value)
    fields_name = f"{model_name}-fields-over-an-image"
    MlflowClient().create_registered_model(fields_name)
    MlflowClient().create_model_version(fields_name, upload({"MLmodel": IMAGE_MODEL,
                                                             "contract.yaml": FIELDS_OVER_AN_IMAGE}), tags=production)

    report = reconcile_once(local_deps())  # the smoke tests: the saved NumPy rows, the saved serving example

    assert (report.deployed, report.failed) == (2, 1), report.failures
    endpoint = MlflowClient().get_model_version(model_name, "1").tags["model_endpoint"]
    assert _requests(state_dir, model_slug(model_name))[("predict", "200")] == 1.0, \
        "the pass predicted the saved example rows through the endpoint"
    instance = dict(zip(["x0", "x1", "x2", "x3"], features[60].tolist(), strict=True))
    request = urllib.request.Request(f"{endpoint}predict", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"instances": [instance]}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["predictions"] == model.predict(features[60:61]).tolist()

    image_tags = MlflowClient().get_model_version(image_name, image.version).tags
    assert image_tags["deployment_status"] == "deployed", image_tags
    image_requests = _requests(state_dir, model_slug(image_name))
    assert image_requests[("invocations", "200")] == 1.0 and ("predict", "200") not in image_requests, \
        "the pass smoke-tested the image model through invocations, with MLflow's saved serving example"
    request = urllib.request.Request(f"{image_tags['model_endpoint']}invocations", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"inputs": {"img": IMAGES[:1].tolist()}}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {"predictions": [float(IMAGES[0].sum())]}

    fields_tags = MlflowClient().get_model_version(fields_name, "1").tags
    assert fields_tags["deployment_status"] == "failed"
    assert "float32 tensor of shape (-1, 28, 28), which cannot be given as fields; leave inputs out" in \
        fields_tags["deployment_message"]
    assert not (state_dir / f"{model_slug(fields_name)}.json").exists(), "no wrapper was started for it"

    MlflowClient().delete_model_version_tag(image_name, image.version, "deploy")
    MlflowClient().delete_model_version_tag(model_name, "1", "deploy")
    assert reconcile_once(local_deps()).undeployed == 2


def test_a_model_whose_example_has_missing_values_deploys_and_takes_nan_where_the_example_had_it(
    local_deps: Callable[[], Deps], model_name: str, production: dict[str, str],
) -> None:
    features = pd.DataFrame({"age": [31.0, np.nan, 52.0, 47.0] * 5, "income": [np.nan, 2.5, 3.0, 4.0] * 5})
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(features, [0, 1, 0, 1] * 5)
    # MLflow marks both columns optional and saves the example's NaN as NaN.
    log_sklearn_model(model_name, model, features, contract=None, tags=production,
                      pip_requirements=[f"scikit-learn=={sklearn.__version__}"])

    report = reconcile_once(local_deps())  # the smoke test sends the example, NaN included

    assert (report.deployed, report.failed) == (1, 0), report.failures
    endpoint = MlflowClient().get_model_version(model_name, "1").tags["model_endpoint"]
    contract = get_json(f"{endpoint}metadata")["contract"]
    assert contract["inputs"]["age"]["allow_nan"] is True and contract["inputs"]["income"]["allow_nan"] is True
    assert {"age": 31.0, "income": None} in contract["examples"], "NaN shown as JSON null"
    body = b'{"instances": [{"age": NaN, "income": 2.0}, {"income": 2.0}, {"age": null, "income": 2.0}]}'
    request = urllib.request.Request(f"{endpoint}predict", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        expected = model.predict(pd.DataFrame({"age": [np.nan] * 3, "income": [2.0] * 3})).tolist()
        assert json.loads(response.read())["predictions"] == expected

    MlflowClient().delete_model_version_tag(model_name, "1", "deploy")
    assert reconcile_once(local_deps()).undeployed == 1
