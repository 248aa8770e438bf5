"""Models logged with a NumPy input example have a tensor signature, not named columns.

A tensor of shape (-1, n) is served as n fields: the contract's inputs in the order written, or
x0 … x(n-1) when the contract is derived. The answers are the model's own on the same array.
A tensor no row of named values can fill (an image) has no fields: it is served through
invocations, and a contract that lists fields for it stops the wrapper saying so.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from devstack.models import LoggedModel, _latest_version
from devstack.servers import LocalMlflow
from model_wrapper.server import EXIT_LOAD_FAILED
from tests.wrapper.conftest import Served, WrapperProcess, model_env, serve, unique
from tests.wrapper.models import log_model

POSITIONAL_MODEL = Path(__file__).with_name("positional_model.py")
# Written c, a, b on purpose: the contract's order, not the alphabet, is the tensor's order.
POSITIONAL_CONTRACT = """\
title: Positional sum
inputs:
  c: {type: number, description: first value of the row}
  a: {type: number, description: second value}
  b: {type: integer, description: third value}
examples:
  - {c: 1, a: 2, b: 3}
"""


def log_positional(name: str, shape: tuple[int, ...], *, contract: str | None) -> LoggedModel:
    """Log the positional-sum model with a float32 tensor signature of `shape`."""
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), shape)]))
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=str(POSITIONAL_MODEL), signature=signature,
                                       pip_requirements=["numpy"])
    if contract is not None:  # the brief's other way to add a contract: to the logged model's files
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "contract.yaml").write_text(contract)
            MlflowClient().log_model_artifact(info.model_id, str(Path(tmp) / "contract.yaml"))
    mlflow.register_model(info.model_uri, name)
    version = _latest_version(name, run.info.run_id)
    return LoggedModel(name, str(version.version), str(version.source), run.info.run_id, None)


@pytest.fixture(scope="module")
def iris_arrays() -> tuple[Any, Any]:
    features, target = load_iris(return_X_y=True)
    return features, target


@pytest.fixture(scope="module")
def numpy_iris(iris_arrays: tuple[Any, Any], mlflow_server: LocalMlflow) -> Iterator[Served]:
    """A classifier trained on arrays and logged with an array example: no contract, no column names."""
    features, target = iris_arrays
    model = LogisticRegression(max_iter=500).fit(features, target)
    yield from serve(log_model(unique("wrapper-numpy"), model, features), mlflow_server)


def test_a_model_logged_with_a_numpy_example_is_served_on_fields_x0_to_xn(numpy_iris: Served) -> None:
    metadata = numpy_iris.get("metadata").json()

    assert list(metadata["contract"]["inputs"]) == ["x0", "x1", "x2", "x3"]
    assert all(field["type"] == "number" for field in metadata["contract"]["inputs"].values())
    assert "float64 tensor of shape (-1, 4)" in metadata["contract"]["description"]
    assert metadata["contract"]["examples"], "the saved input example becomes the contract's examples"
    assert metadata["fast_path"] is True
    schema = numpy_iris.get("openapi.json").json()
    assert any({"x0", "x3"} <= set(model.get("properties", {})) for model in schema["components"]["schemas"].values())


def test_its_answers_equal_the_models_own_on_the_whole_data_set(numpy_iris: Served,
                                                                iris_arrays: tuple[Any, Any]) -> None:
    features, _ = iris_arrays
    pyfunc = mlflow.pyfunc.load_model(numpy_iris.model.source)
    instances = [dict(zip(["x0", "x1", "x2", "x3"], row, strict=True)) for row in features.tolist()]

    answer = numpy_iris.post("predict", {"instances": instances}).json()

    assert answer["predictions"] == pyfunc.predict(features).tolist()
    assert answer["probabilities"] == numpy_iris.model.model.predict_proba(features).tolist()
    mlflow_answer = numpy_iris.post("invocations", {"inputs": features.tolist()}).json()
    assert mlflow_answer["predictions"] == answer["predictions"], "MLflow clients send the tensor itself"


def test_a_contract_names_the_tensors_values_in_the_order_it_lists_them(mlflow_server: LocalMlflow) -> None:
    model = log_positional(unique("wrapper-positional"), (-1, 3), contract=POSITIONAL_CONTRACT)
    served = serve(model, mlflow_server)
    wrapper = next(served)
    try:
        answer = wrapper.post("predict", {"instances": [{"a": 2, "b": 3, "c": 1}, {"b": 0, "a": 0, "c": 7.5}]})
        metadata = wrapper.get("metadata").json()
        beyond_float32 = wrapper.post("predict", {"instances": [{"a": 1e39, "b": 0, "c": 0}]})
    finally:
        served.close()

    assert beyond_float32.status_code == 422, "NumPy would have passed the model an infinity"
    assert beyond_float32.json()["error"]["details"][0]["field"] == "instances[0].a"

    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [321.0, 7.5]
    reference = mlflow.pyfunc.load_model(model.source).predict(np.array([[1, 2, 3], [7.5, 0, 0]], dtype=np.float32))
    assert answer.json()["predictions"] == reference.tolist()
    assert metadata["fast_path"] is False and metadata["contract_origin"] == "model's contract.yaml"


def test_an_image_models_own_contract_may_leave_inputs_out_and_it_serves_through_invocations(
        mlflow_server: LocalMlflow) -> None:
    model = log_positional(unique("wrapper-image"), (-1, 2, 3), contract="title: Image sum\nserving: {replicas: 2}\n")
    served = serve(model, mlflow_server)
    wrapper = next(served)
    try:
        answer = wrapper.post("invocations", {"inputs": [[[1, 2, 3], [0, 0, 1]], [[0.5, 0, 0], [0, 1, 0]]]})
        predict = wrapper.post("predict", {"instances": [{"x0": 1}]})
        metadata = wrapper.get("metadata").json()
        document = wrapper.get("openapi.json").json()
    finally:
        served.close()

    assert answer.status_code == 200 and answer.json() == {"predictions": [[321.0, 100.0], [0.5, 10.0]]}, answer.text
    assert predict.status_code == 404 and "a float32 tensor of shape (-1, 2, 3)" in predict.json()["error"]["message"]
    assert metadata["contract_origin"] == "model's contract.yaml" and metadata["contract"]["title"] == "Image sum"
    assert document["info"]["title"] == "Image sum" and f"/{wrapper.slug}/api/predict" not in document["paths"]
    inputs = document["paths"][f"/{wrapper.slug}/api/invocations"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["inputs"]
    assert inputs["items"] == {"type": "array", "minItems": 2, "maxItems": 2,
                               "items": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "number"}}}


@pytest.mark.parametrize(("shape", "contract", "fragment"), [
    ((-1, 2, 2), POSITIONAL_CONTRACT, "the contract has 3 inputs, but the model takes a float32 tensor of shape "
                                      "(-1, 2, 2), which cannot be given as fields; leave inputs out"),
    ((-1, 4), POSITIONAL_CONTRACT, "the contract has 3 inputs but the model takes a float32 tensor of shape (-1, 4)"),
], ids=["fields over an image", "a contract one value short"])
def test_a_tensor_the_contract_cannot_fill_stops_the_wrapper_saying_why(
        shape: tuple[int, ...], contract: str | None, fragment: str, mlflow_server: LocalMlflow) -> None:
    model = log_positional(unique("wrapper-tensor"), shape, contract=contract)
    wrapper = WrapperProcess(model_env(model, mlflow_server)).start()
    assert wrapper.exit_code() == EXIT_LOAD_FAILED

    reason = wrapper.termination_log.read_text()
    assert fragment in reason, reason
    assert reason.count("\n") == 1
