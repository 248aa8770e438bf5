"""Scikit-learn models loaded without MLflow answer exactly as the MLflow-loaded ones.

Each model is logged to the real MLflow server and S3, then loaded twice: by
`model_wrapper.loading.sklearn_loader.load_fast` (MLflow's REST API, S3 and the MLmodel file read
directly) and by `model_wrapper.loading.mlflow_loader.load_model` (MLflow). The two loaded models must agree
on everything a client sees (contract, backend, columns, classes, warnings) and predict bit for
bit alike, also against `mlflow.pyfunc` on many random inputs; what the direct path cannot load
exactly (float32 columns, text columns, tensors, params, a source it cannot resolve) goes to MLflow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from devstack.models import IRIS_CONTRACT, iris_frame
from devstack.servers import LocalMlflow
from model_wrapper.config.settings import load_settings
from model_wrapper.loading.mlflow_loader import load_model
from model_wrapper.loading.sklearn_loader import artifact_location, load_fast, mlflow_settings_handled
from model_wrapper.predict.predictor import LoadedModel
from tests.wrapper.conftest import model_env, unique
from tests.wrapper.models import log_model


def _iris() -> pd.DataFrame:
    return iris_frame()[0]


def _wine_counts() -> tuple[pd.DataFrame, Any]:
    data = load_wine(as_frame=True)
    return (data.data * 10).round().astype("int64"), data.target


def _int32_iris() -> pd.DataFrame:
    return (_iris() * 10).round().astype("int32")


CASES: dict[str, Callable[[], tuple[Any, pd.DataFrame, str | None]]] = {
    "logistic with its contract": lambda: (LogisticRegression(max_iter=500).fit(_iris(), iris_frame()[1]), _iris(),
                                           IRIS_CONTRACT),
    "logistic, contract from the signature": lambda: (LogisticRegression(max_iter=500).fit(_iris(), iris_frame()[1]),
                                                      _iris(), None),
    "forest": lambda: (RandomForestClassifier(n_estimators=4, random_state=0).fit(_iris(), iris_frame()[1]), _iris(),
                       IRIS_CONTRACT),
    "tree (skops trusted types)": lambda: (DecisionTreeClassifier(max_depth=3).fit(_iris(), iris_frame()[1]), _iris(),
                                           None),
    "scaled pipeline": lambda: (make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        _iris(), iris_frame()[1]), _iris(), None),
    "regression": lambda: (LinearRegression().fit(_iris().iloc[:, :3], _iris().iloc[:, 3]), _iris().iloc[:, :3],
                           None),
    "integer features": lambda: (LogisticRegression(max_iter=3000).fit(*_wine_counts()), _wine_counts()[0], None),
    "int32 signature": lambda: (LogisticRegression(max_iter=3000).fit(_int32_iris(), iris_frame()[1]), _int32_iris(),
                                None),
}
TO_MLFLOW: dict[str, Callable[[], tuple[Any, pd.DataFrame | np.ndarray]]] = {
    "float32 signature": lambda: (LogisticRegression(max_iter=500).fit(_iris().astype("float32"), iris_frame()[1]),
                                  _iris().astype("float32")),
    "text column": lambda: (make_pipeline(StandardScaler(), LogisticRegression()).fit(_iris(), iris_frame()[1]),
                            _iris().assign(sepal_length=_iris()["sepal_length"].astype(str))),
    "tensor signature": lambda: (LogisticRegression(max_iter=500).fit(_iris().to_numpy(), iris_frame()[1]),
                                 _iris().to_numpy()),
}


def _random_rows(frame: pd.DataFrame, count: int, seed: int) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    values = frame.to_numpy()
    if np.issubdtype(values.dtype, np.integer):
        drawn = rng.integers(values.min(), values.max() + 1, size=(count, values.shape[1]))
    else:
        drawn = values.mean(axis=0) + rng.normal(size=(count, values.shape[1])) * values.std(axis=0) * 3
    return [tuple(row) for row in drawn.tolist()]


def _both(name: str, model: Any, frame: pd.DataFrame | np.ndarray, contract: str | None, mlflow_server: LocalMlflow,
          tmp_path: Path) -> tuple[LoadedModel | None, LoadedModel, Any]:
    logged = log_model(unique(name.replace(" ", "-").replace("(", "").replace(")", "")), model, frame,
                       contract=contract)
    settings = load_settings(model_env(logged, mlflow_server))
    fast = load_fast(settings, tmp_path / "direct")
    return (fast[0] if fast else None), load_model(settings, tmp_path / "mlflow"), mlflow.pyfunc.load_model(
        logged.source)


@pytest.mark.parametrize("name", list(CASES))
def test_a_model_loaded_without_mlflow_predicts_bit_for_bit_as_through_mlflow(name: str, mlflow_server: LocalMlflow,
                                                                            tmp_path: Path) -> None:
    model, frame, contract = CASES[name]()
    direct, through_mlflow, pyfunc = _both(name, model, frame, contract, mlflow_server, tmp_path)

    assert direct is not None, f"{name} should load without MLflow"
    assert direct.contract == through_mlflow.contract
    assert (direct.contract_origin, direct.run_id, direct.environment, direct.params) == (
        through_mlflow.contract_origin, through_mlflow.run_id, through_mlflow.environment, through_mlflow.params)
    assert (direct.backend.description, direct.backend.columns, direct.backend.classes) == (
        through_mlflow.backend.description, through_mlflow.backend.columns, through_mlflow.backend.classes)
    for rows in (list(frame.itertuples(index=False, name=None)), _random_rows(frame, 300, seed=len(name))):
        labels, probabilities = direct.backend.predict(rows)
        expected_labels, expected_probabilities = through_mlflow.backend.predict(rows)
        assert labels.dtype == expected_labels.dtype and labels.tobytes() == expected_labels.tobytes()
        assert (probabilities is None) == (expected_probabilities is None)
        if probabilities is not None:
            assert probabilities.tobytes() == expected_probabilities.tobytes()
        as_pyfunc = pyfunc.predict(pd.DataFrame(rows, columns=list(frame.columns)).astype(frame.dtypes.to_dict()))
        assert labels.tobytes() == np.asarray(as_pyfunc).tobytes()


@pytest.mark.parametrize("name", list(TO_MLFLOW))
def test_what_only_mlflow_loads_exactly_is_left_to_it(name: str, mlflow_server: LocalMlflow, tmp_path: Path) -> None:
    model, frame = TO_MLFLOW[name]()
    direct, through_mlflow, pyfunc = _both(name, model, frame, None, mlflow_server, tmp_path)

    assert direct is None
    head = frame[:10]
    labels, _ = through_mlflow.backend.predict([tuple(row) for row in np.asarray(head, dtype=object).tolist()])
    assert np.asarray(labels).tolist() == np.asarray(pyfunc.predict(head)).tolist()


def test_invocations_are_mlflow_scoring_once_mlflow_is_loaded(mlflow_server: LocalMlflow, tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=500).fit(_iris(), iris_frame()[1])
    direct, through_mlflow, _ = _both("invocations", model, _iris(), IRIS_CONTRACT, mlflow_server, tmp_path)
    body = pd.DataFrame(_iris().head(7)).to_json(orient="split", index=False).encode()
    body = b'{"dataframe_split": ' + body + b"}"

    assert direct is not None
    assert direct.backend.invoke(body, "application/json") == through_mlflow.backend.invoke(body, "application/json")


@pytest.mark.parametrize(("source", "tracking"), [
    ("models:/iris/3", "http://127.0.0.1:1"),  # a registered version: MLflow resolves those
    ("runs:/0123/model", "http://127.0.0.1:1"),
    ("models:/m-0123", None),
    ("models:/m-0123", "file:///tmp/mlruns"),
    ("models:/m-0123", "http://127.0.0.1:1"),  # unreachable: MLflow retries and words the failure
])
def test_sources_it_cannot_resolve_are_left_to_mlflow(source: str, tracking: str | None) -> None:
    assert artifact_location(source, tracking) is None


def test_an_s3_source_is_read_as_given() -> None:
    assert artifact_location("s3://bucket/some/model/", None) == "s3://bucket/some/model"


@pytest.mark.parametrize(("environ", "handled"), [
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
      "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "PATH": "/usr/bin"}, True),
    ({"MLFLOW_TRACKING_INSECURE_TLS": "true"}, False),
    ({"MLFLOW_S3_IGNORE_TLS": "true"}, False),
    ({"MLFLOW_ENABLE_WORKSPACES": "true"}, False),
    ({"MLFLOW_A_SETTING_A_NEWER_MLFLOW_ADDS": "1"}, False),  # unknown means not handled: MLflow loads it
    ({"MLFLOW_TRACKING_INSECURE_TLS": ""}, True),  # set but empty is unset, as MLflow reads it
])
def test_only_mlflow_settings_the_direct_path_honours_let_it_load(environ: dict[str, str], handled: bool) -> None:
    assert mlflow_settings_handled(environ) is handled


def test_a_new_mlflow_pin_means_checking_the_direct_loader_again() -> None:
    """The direct loader reads MLflow's REST API, its artifact layout, the MLmodel file and the sklearn flavour's
    serialization formats as MLflow 3.17.2 writes them. When the pin moves, read mlflow/sklearn/__init__.py
    (`_load_model_from_local_file`, `SERIALIZATION_FORMATS`) and mlflow/environment_variables.py again, check
    `FORMATS` and `_HANDLED_ENV` in model_wrapper/loading/sklearn_loader.py, then update the version here."""
    import importlib.metadata

    from mlflow.sklearn import SUPPORTED_SERIALIZATION_FORMATS

    from model_wrapper.loading.sklearn_loader import FORMATS

    assert importlib.metadata.version("mlflow") == "3.17.2"
    assert set(SUPPORTED_SERIALIZATION_FORMATS) == set(FORMATS)


def test_a_local_model_directory_is_read_in_place_and_answers_as_the_same_model_from_s3(
        mlflow_server: LocalMlflow, tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=500).fit(_iris(), iris_frame()[1])
    logged = log_model(unique("local-files"), model, _iris(), contract=IRIS_CONTRACT)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.source, dst_path=str(tmp_path / "files")))
    from_s3 = load_fast(load_settings(model_env(logged, mlflow_server)), tmp_path / "s3")
    local = load_settings({**model_env(logged, mlflow_server), "MODEL_SOURCE": folder.as_uri()})

    from_files = load_fast(local, tmp_path / "unused")
    through_mlflow = load_model(local, tmp_path / "mlflow")

    assert from_files is not None and from_s3 is not None
    assert from_files[0].files == folder and not (tmp_path / "unused").exists()
    assert from_files[0].contract == from_s3[0].contract == through_mlflow.contract
    rows = _random_rows(_iris(), 50, seed=3)
    for other in (from_s3[0], through_mlflow):
        labels, probabilities = from_files[0].backend.predict(rows)
        expected_labels, expected_probabilities = other.backend.predict(rows)
        assert labels.tobytes() == expected_labels.tobytes()
        assert probabilities.tobytes() == expected_probabilities.tobytes()
