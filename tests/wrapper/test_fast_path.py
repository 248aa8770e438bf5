"""The scikit-learn fast path (native predict on arrays) answers exactly as MLflow pyfunc does.

Each model is logged to the real MLflow server and S3, loaded by the wrapper's loader, and its
predictions on a whole data set are compared bit for bit with `mlflow.pyfunc` on a DataFrame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import orjson
import pandas as pd
import pytest
import scipy.special
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from devstack.models import iris_frame
from devstack.servers import LocalMlflow
from model_wrapper.config.settings import load_settings
from model_wrapper.loading.mlflow_loader import load_model
from model_wrapper.predict.predictor import Predictor
from tests.wrapper.conftest import model_env, serve, unique
from tests.wrapper.models import log_model


def _iris() -> pd.DataFrame:
    return iris_frame()[0]


def _diabetes() -> tuple[pd.DataFrame, Any]:
    data = load_diabetes(as_frame=True)
    return data.data, data.target


def _wine_counts() -> tuple[pd.DataFrame, Any]:
    """Integer-only features, so both paths hand scikit-learn int64."""
    data = load_wine(as_frame=True)
    return (data.data * 10).round().astype("int64"), data.target


MODELS: dict[str, Callable[[], tuple[Any, pd.DataFrame]]] = {
    "logistic": lambda: (LogisticRegression(max_iter=500).fit(_iris(), iris_frame()[1]), _iris()),
    "tree": lambda: (DecisionTreeClassifier(max_depth=4, random_state=0).fit(_iris(), iris_frame()[1]), _iris()),
    "forest": lambda: (RandomForestClassifier(n_estimators=5, random_state=0).fit(_iris(), iris_frame()[1]), _iris()),
    "regression": lambda: (LinearRegression().fit(*_diabetes()), _diabetes()[0]),
    "scaled pipeline": lambda: (make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        _iris(), iris_frame()[1]), _iris()),
    "integer features": lambda: (LogisticRegression(max_iter=2000).fit(*_wine_counts()), _wine_counts()[0]),
}
TRUSTED = ["sklearn.tree._tree.Tree"]


def _load(name: str, model: Any, frame: pd.DataFrame, mlflow_server: LocalMlflow,
          tmp_path: Path) -> tuple[Predictor, Any, Any]:
    logged = log_model(unique(name.replace(" ", "-")), model, frame)
    settings = load_settings(model_env(logged, mlflow_server))
    loaded = load_model(settings, tmp_path)
    predictor = Predictor(settings.model_name, settings.model_version, settings.max_batch)
    predictor.install(loaded)
    predictor.warm_up()
    return predictor, loaded.backend, mlflow.pyfunc.load_model(logged.source)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fast_path_predictions_equal_pyfunc_bit_for_bit(name: str, mlflow_server: LocalMlflow, tmp_path: Path) -> None:
    model, frame = MODELS[name]()
    _, backend, pyfunc = _load(name, model, frame, mlflow_server, tmp_path)
    rows = list(frame.itertuples(index=False, name=None))

    predictions, probabilities = backend.predict(rows)

    assert backend.fast, backend.description
    expected = pyfunc.predict(frame)
    assert predictions.dtype == expected.dtype
    assert np.array_equal(predictions, expected)
    if hasattr(model, "predict_proba"):
        assert np.array_equal(probabilities, model.predict_proba(frame))
    else:
        assert probabilities is None


@pytest.mark.parametrize("name", ["logistic", "regression"])
def test_predict_json_round_trips_to_the_pyfunc_values(name: str, mlflow_server: LocalMlflow, tmp_path: Path) -> None:
    model, frame = MODELS[name]()
    predictor, _, pyfunc = _load(name, model, frame, mlflow_server, tmp_path)
    instances = frame.head(40).to_dict(orient="records")

    answer = orjson.loads(predictor.predict_body(orjson.dumps({"instances": instances})))

    assert np.array_equal(np.array(answer["predictions"]), pyfunc.predict(frame.head(40)))


def test_a_model_with_text_columns_is_served_through_pyfunc_with_the_same_answers(mlflow_server: LocalMlflow,
                                                                                   tmp_path: Path) -> None:
    frame = _iris().assign(colour=np.where(iris_frame()[1] == 0, "white", "blue"))
    model = make_pipeline(ColumnTransformer([("text", OneHotEncoder(), ["colour"])], remainder="passthrough"),
                          LogisticRegression(max_iter=1000)).fit(frame, iris_frame()[1])
    predictor, backend, pyfunc = _load("text columns", model, frame, mlflow_server, tmp_path)
    instances = frame.sample(30, random_state=1).to_dict(orient="records")

    answer = orjson.loads(predictor.predict_body(orjson.dumps({"instances": instances})))

    assert not backend.fast
    expected = pyfunc.predict(pd.DataFrame(instances))
    assert answer["predictions"] == expected.tolist()
    assert np.array_equal(np.array(answer["probabilities"]), model.predict_proba(pd.DataFrame(instances)))


def test_a_pipeline_holding_a_scipy_ufunc_loads_in_a_wrapper_process(mlflow_server: LocalMlflow) -> None:
    """The wrapper imports scipy.special before MLflow (for its cold start); skops names ufuncs by
    the import order of the process, so a model saved in another order must still be trusted."""
    model = make_pipeline(FunctionTransformer(scipy.special.expit), LogisticRegression(max_iter=500))
    model.fit(_iris(), iris_frame()[1])
    logged = log_model(unique("ufunc-pipeline"), model, _iris())
    instances = _iris().head(5)

    for served in serve(logged, mlflow_server):
        answer = served.post("predict", {"instances": instances.to_dict(orient="records")})

    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == model.predict(instances).tolist()
