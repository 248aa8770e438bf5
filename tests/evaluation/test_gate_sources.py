"""The gate for versions the other tests do not log: one registered MLflow-2 style (a `runs:/` source
over the run's own artifacts, no logged model), whose figures go on the run; and one whose flavour the
shared runtime lacks (XGBoost), evaluated by the interpreter RUNTIME_IMAGES picks on the local target,
as its wrapper is. Figures are compared with scikit-learn's on what MLflow itself predicts."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score, f1_score

from devstack.models import IRIS_CONTRACT, iris_frame
from tests.evaluation.conftest import GATE, csv_bytes, good_model, iris_table
from tests.reconcile.runtimes import XGBOOST_CONTRACT, log_xgboost_model
from tests.reconcile.test_environments import xgboost_python  # noqa: F401 - the runtime that has XGBoost
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

ROOT = Path(__file__).resolve().parents[2]


def _run_with_gated_model_files(model: Any) -> str:
    """A run holding a saved model, its gated contract and its test data among its own artifacts, as
    MLflow 2 kept them (no logged model); its id."""
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run() as run:
        contract, data = Path(tmp, "contract.yaml"), Path(tmp, "evaluation.csv")
        contract.write_text(IRIS_CONTRACT + GATE)
        data.write_bytes(csv_bytes(iris_table()))
        mlflow.sklearn.save_model(model, f"{tmp}/model", extra_files=[str(contract), str(data)],
                                  pip_requirements=["scikit-learn"])
        mlflow.log_artifacts(f"{tmp}/model", "model")
    return str(run.info.run_id)


def test_an_mlflow_2_version_is_gated_and_its_figures_go_on_its_run(
    local_deps: Callable[[], Deps], model_name: str, production: dict[str, str],
) -> None:
    model, client = good_model(), MlflowClient()
    run_id = _run_with_gated_model_files(model)
    client.create_registered_model(model_name)
    version = client.create_model_version(model_name, f"runs:/{run_id}/model", run_id, tags=production)
    assert not getattr(version, "model_id", None)  # the case under test: nothing but the run to log on

    report = reconcile_once(local_deps())

    assert (report.deployed, report.failed) == (1, 0), report.failures
    tags = client.get_model_version(model_name, version.version).tags
    assert (tags["deployment_status"], tags["evaluation_status"]) == ("deployed", "passed")
    features, target = iris_frame()
    predicted = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(features)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["evaluation_accuracy"] == pytest.approx(accuracy_score(target, predicted), abs=1e-12)
    assert metrics["evaluation_f1_macro"] == pytest.approx(f1_score(target, predicted, average="macro"), abs=1e-12)


PREDICT_ALL = """
import json, sys
import mlflow.pyfunc
from devstack.models import iris_frame
features, _ = iris_frame()
print(json.dumps(mlflow.pyfunc.load_model(sys.argv[1]).predict(features).tolist()))
"""


def test_a_flavour_the_shared_runtime_lacks_is_evaluated_by_the_runtime_images_interpreter(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], state_dir: Path, model_name: str,
    xgboost_python: Path, tmp_path: Path, production: dict[str, str],  # noqa: F811
) -> None:
    """This process cannot import xgboost, so a pass only gets figures if the evaluation ran where it can."""
    contract, data = tmp_path / "contract.yaml", tmp_path / "evaluation.csv"
    contract.write_text(XGBOOST_CONTRACT + "evaluation:\n  data: evaluation.csv\n  target: species\n"
                        "  metrics: {accuracy: {min: 0.9}}\n")
    data.write_bytes(csv_bytes(iris_table(names=False)))
    logged = log_xgboost_model(xgboost_python, model_name, contract, ROOT, data)
    client = MlflowClient()
    for key, value in production.items():
        client.set_model_version_tag(model_name, str(logged["version"]), key, value)
    settings = make_settings(deploy_target="local", local_state_dir=state_dir, rollout_timeout_seconds=120,
                             runtime_images=f"xgboost={xgboost_python}")

    report = reconcile_once(make_deps(settings))

    assert (report.deployed, report.failed) == (1, 0), report.failures
    version = client.get_model_version(model_name, str(logged["version"]))
    assert (version.tags["deployment_status"], version.tags["evaluation_status"]) == ("deployed", "passed")
    done = subprocess.run([str(xgboost_python), "-c", PREDICT_ALL, f"models:/{model_name}/{version.version}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=True)
    _, target = iris_frame()
    expected = accuracy_score(target, json.loads(done.stdout.strip().splitlines()[-1]))
    assert version.tags["evaluation_summary"] == f"accuracy={expected:.3f} (evaluation.csv, 150 rows)"
    metrics = {m.key: m.value for m in client.get_logged_model(version.source.removeprefix("models:/")).metrics or []}
    assert metrics["evaluation_accuracy"] == pytest.approx(expected, abs=1e-12)
