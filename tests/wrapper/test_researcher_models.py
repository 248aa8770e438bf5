"""The researcher's own models of issue 22, served by real wrapper processes: a regressor logged with a
signature but no input example (its Swagger types come from the signature, never a type it cannot
return), and integer fields that take 70.0, as a float column or `json.dumps(70.0)` writes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow
from model_wrapper.contract.signature import output_type
from tests.wrapper.conftest import Served, serve, unique

FRAME = pd.DataFrame({"age": np.array([30, 45, 61, 70, 52, 38], dtype=np.int64),
                      "bmi": [21.0, 27.5, 31.2, 24.3, 29.9, 22.8]})
RISK = np.array([0.11, 0.32, 0.61, 0.55, 0.47, 0.19])


@pytest.fixture(scope="module")
def regressor(mlflow_server: LocalMlflow) -> Iterator[Served]:
    """`patient-risk`: signature inferred from the data, no input example, no contract."""
    model = LinearRegression().fit(FRAME, RISK)
    name = unique("patient-risk")
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                        signature=infer_signature(FRAME, model.predict(FRAME)))
    logged = LoggedModel(name, str(info.registered_model_version), info.model_uri, run.info.run_id, model)
    yield from serve(logged, mlflow_server)


def predict(served: Served, instances: list[dict[str, Any]]) -> Any:
    # json.dumps writes 70.0 for a float, as a consumer building rows from a float column does.
    return served.post("predict", content=json.dumps({"instances": instances}).encode(),
                       headers={"Content-Type": "application/json"})


def test_an_integer_field_takes_an_integral_float_as_that_integer(regressor: Served) -> None:
    as_float = predict(regressor, [{"age": 70.0, "bmi": 24.3}])
    as_int = predict(regressor, [{"age": 70, "bmi": 24.3}])

    assert as_float.status_code == 200, as_float.text
    assert as_float.json() == as_int.json()
    expected = regressor.model.model.predict(pd.DataFrame({"age": [70], "bmi": [24.3]}))
    assert as_float.json()["predictions"] == pytest.approx(expected.tolist())


@pytest.mark.parametrize("age", [70.5, "70", True])
def test_an_integer_field_refuses_a_fraction_a_string_or_a_boolean_naming_the_field(regressor: Served,
                                                                                     age: Any) -> None:
    answer = predict(regressor, [{"age": age, "bmi": 24.3}])

    assert answer.status_code == 422
    assert [d["field"] for d in answer.json()["error"]["details"]] == ["instances[0].age"]
    if age == 70.5:
        assert "70.5 has a fractional part" in answer.json()["error"]["details"][0]["message"]


def test_swagger_says_what_an_integer_field_accepts_and_takes_the_prediction_type_from_the_signature(
        regressor: Served) -> None:
    document = regressor.get("openapi.json").json()
    schemas = document["components"]["schemas"]

    age = schemas["Instance"]["properties"]["age"]
    assert age["type"] == "integer" and "70.0, counts as one, 70.5 is refused" in age["description"]
    assert schemas["PredictResponse"]["properties"]["predictions"]["items"] == {"type": "number"}, \
        "a regressor returns floats: never the 'string' Swagger shows for an untyped answer"
    metadata = regressor.get("metadata").json()
    assert metadata["contract_origin"] == "model signature"
    assert metadata["contract"]["outputs"]["prediction"]["type"] == "number"


@pytest.mark.parametrize(("outputs", "kind"), [
    ([{"type": "double"}], "number"),
    ([{"type": "long"}], "integer"),
    ([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1]}}], "number"),
    ([{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1, 1]}}], "integer"),
    ([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}], None),
    ([{"name": "a", "type": "double"}, {"name": "b", "type": "double"}], None),
    (None, None),
])
def test_only_one_output_of_one_value_per_row_gives_the_prediction_a_type(outputs: Any, kind: str | None) -> None:
    found = output_type(outputs)
    assert (found.value if found else None) == kind
