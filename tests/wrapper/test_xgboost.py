"""An XGBoost classifier (its scikit-learn API, `XGBClassifier`) answers `probabilities` and `labels`
on `predict`, and `invocations` exactly as `mlflow models serve` does.

The shared virtualenv never has xgboost (issue 13's runtime without the library), so the model is
trained, logged and served by the runtime virtualenv `tests.reconcile.runtimes` builds: the
wrapper process, the real `mlflow models serve --env-manager local` and the native model's own
`predict_proba` all run on that interpreter. One session-scoped pair of servers.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT, LoggedModel
from devstack.servers import LocalMlflow
from model_wrapper.contract.naming import model_slug
from tests.reconcile.runtimes import xgboost_runtime
from tests.wrapper.conformance import SAME_PROCESS_ENV, Pair, _distinct_ports, _mlflow_serve, _wait_all, post_both
from tests.wrapper.conftest import ROOT, WrapperProcess, model_env, unique

LABELS = ["setosa", "versicolor", "virginica"]
# Trained, logged and asked for its own answers on the runtime interpreter (this one cannot import xgboost).
LOG_CLASSIFIER = """
import json, sys
import mlflow, mlflow.xgboost, xgboost
from devstack.models import iris_frame
features, target = iris_frame()
model = xgboost.XGBClassifier(n_estimators=12, max_depth=3).fit(features, target)
with mlflow.start_run():
    info = mlflow.xgboost.log_model(model, name="model", registered_model_name=sys.argv[1],
                                    input_example=features.iloc[:2], extra_files=[sys.argv[2]],
                                    pip_requirements=[f"xgboost=={xgboost.__version__}"])
rows = features.iloc[::7]
print(json.dumps({"version": info.registered_model_version, "rows": rows.to_dict(orient="records"),
                  "predictions": model.predict(rows).tolist(), "probabilities": model.predict_proba(rows).tolist()}))
"""


# XGBoost 3.0's scikit-learn API saves and loads `_estimator_type`, which scikit-learn 1.9 no longer
# defines (it moved to `__sklearn_tags__`); XGBoost 3.1 reads the tags, but its CPU wheels need glibc
# 2.28, newer than this machine's. Every process of the runtime (the logging script, the wrapper,
# mlflow models serve) gets the attribute back, as a runtime image with matching versions would have it.
SKLEARN_19_SHIM = """\
import xgboost.sklearn

xgboost.sklearn.XGBClassifier._estimator_type = "classifier"
xgboost.sklearn.XGBRegressor._estimator_type = "regressor"
"""


def _shim(directory: Path) -> dict[str, str]:
    (directory / "sitecustomize.py").write_text(SKLEARN_19_SHIM)
    return {"PYTHONPATH": str(directory)}


def _with_uvicorn(python: Path) -> Path:
    """`mlflow models serve` starts the `uvicorn` script found on PATH: give the runtime one of its own."""
    script = python.parent / "uvicorn"
    if not script.exists():
        script.write_text(f"#!{python}\nimport sys\nfrom uvicorn.main import main\nsys.exit(main())\n")
        script.chmod(0o755)
    return python


@pytest.fixture(scope="session")
def xgboost_pair(mlflow_server: LocalMlflow, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pair, Any]]:
    """The XGBoost classifier served by the wrapper and by mlflow models serve, both on the runtime
    interpreter; with the native model's answers for some iris rows."""
    python = _with_uvicorn(xgboost_runtime())
    folder = tmp_path_factory.mktemp("xgboost")
    shim = _shim(folder)
    contract = folder / "contract.yaml"
    contract.write_text(IRIS_CONTRACT)
    name = unique("wrapper-xgboost")
    done = subprocess.run([str(python), "-c", LOG_CLASSIFIER, name, str(contract)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, **mlflow_server.client_env(), **shim})
    assert done.returncode == 0, done.stderr[-3000:]
    native = json.loads(done.stdout.strip().splitlines()[-1])
    version = MlflowClient().get_model_version(name, str(native["version"]))
    model = LoggedModel(name, str(version.version), str(version.source), str(version.run_id), None)
    wrapper_port, mlflow_port = _distinct_ports(2)
    wrapper = WrapperProcess({**model_env(model, mlflow_server), **SAME_PROCESS_ENV, **shim}, port=wrapper_port,
                             python=str(python)).start()
    pair = Pair("xgboost", model, wrapper, model_slug(name), mlflow_port,
                _mlflow_serve(model, mlflow_server, mlflow_port, wrapper.workdir / "mlflow-serve.log", python=python,
                              env=shim))
    try:
        _wait_all([pair])
        yield pair, native
    finally:
        wrapper.stop()
        from devstack.servers import stop_process

        stop_process(pair.mlflow_process)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, headers={"connection": "close"}) as session:
        yield session


def test_an_xgboost_classifier_answers_its_native_probabilities_and_labels(xgboost_pair: tuple[Pair, Any],
                                                                           client: httpx.Client) -> None:
    pair, native = xgboost_pair
    answer = client.post(pair.api + "predict", json={"instances": native["rows"]})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == native["predictions"]
    # XGBoost's probabilities are float32: the same float32 values, as JSON writes them.
    assert np.array_equal(np.float32(body["probabilities"]), np.float32(native["probabilities"]))
    assert body["labels"] == [LABELS[p] for p in native["predictions"]]
    assert client.get(pair.api + "metadata").json()["flavor"] == "MLflow pyfunc (xgboost)"


def test_its_predictions_are_the_peers(xgboost_pair: tuple[Pair, Any], client: httpx.Client) -> None:
    pair, native = xgboost_pair
    peer = client.post(pair.mlflow_root + "/invocations", json={"dataframe_records": native["rows"]})
    ours = client.post(pair.api + "predict", json={"instances": native["rows"]})

    assert peer.status_code == ours.status_code == 200
    assert ours.json()["predictions"] == peer.json()["predictions"]


@pytest.mark.parametrize("case", ["dataframe_split", "dataframe_records", "instances", "csv", "a column missing"])
def test_invocations_answer_exactly_as_mlflow_models_serve_on_the_same_runtime(
        xgboost_pair: tuple[Pair, Any], client: httpx.Client, case: str) -> None:
    pair, native = xgboost_pair
    rows = native["rows"]
    columns = list(rows[0])
    bodies = {
        "dataframe_split": json.dumps({"dataframe_split": {"columns": columns,
                                                           "data": [list(r.values()) for r in rows]}}),
        "dataframe_records": json.dumps({"dataframe_records": rows}),
        "instances": json.dumps({"instances": rows}),
        "csv": "\n".join([",".join(columns), *(",".join(map(str, r.values())) for r in rows)]) + "\n",
        "a column missing": json.dumps({"dataframe_records": [{k: v for k, v in r.items() if k != columns[-1]}
                                                              for r in rows]}),
    }
    content_type = "text/csv" if case == "csv" else "application/json"
    theirs, ours, root = post_both(pair, bodies[case].encode(), content_type, client)

    assert theirs.status_code == (400 if case == "a column missing" else 200)
    for answer in (ours, root):
        assert (answer.status_code, answer.headers["content-type"], answer.content) == \
            (theirs.status_code, theirs.headers["content-type"], theirs.content)
