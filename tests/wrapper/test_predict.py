"""`predict` on a real wrapper process: answers equal the model's own, with probabilities and labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from devstack.models import IRIS_CONTRACT, IRIS_FEATURES, iris_frame
from model_wrapper.contract.spec import parse_contract
from tests.wrapper.conftest import Served

EXAMPLES = parse_contract(IRIS_CONTRACT.encode()).examples
LABELS = ["setosa", "versicolor", "virginica"]


def test_predictions_equal_the_models_own_on_the_contract_examples(iris: Served) -> None:
    answer = iris.post("predict", {"instances": EXAMPLES})

    assert answer.status_code == 200
    expected = iris.model.model.predict(pd.DataFrame(EXAMPLES, columns=IRIS_FEATURES))
    assert answer.json()["predictions"] == expected.tolist()


def test_predictions_equal_the_models_own_on_the_whole_data_set(iris: Served) -> None:
    features, _ = iris_frame()
    instances = features.head(50).to_dict(orient="records")

    body = iris.post("predict", {"instances": instances}).json()

    assert body["predictions"] == iris.model.model.predict(features.head(50)).tolist()
    assert np.array_equal(np.array(body["probabilities"]), iris.model.model.predict_proba(features.head(50)))


def test_classifier_answers_carry_probabilities_per_class_and_label_names(iris: Served) -> None:
    body = iris.post("predict", {"instances": EXAMPLES}).json()

    assert set(body) == {"predictions", "probabilities", "labels"}
    for probabilities in body["probabilities"]:
        assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-9
    assert body["labels"] == [LABELS[p] for p in body["predictions"]]
    assert body["labels"] == ["setosa", "virginica"]


def test_integer_values_are_accepted_for_number_fields(iris: Served) -> None:
    instance = {"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 0}

    answer = iris.post("predict", {"instances": [instance]})

    assert answer.status_code == 200
    assert answer.json()["predictions"] == iris.model.model.predict(pd.DataFrame([instance])).tolist()


def test_the_answer_is_json_with_the_response_schema_published_in_openapi(iris: Served) -> None:
    answer = iris.post("predict", {"instances": EXAMPLES[:1]})
    document = iris.get("openapi.json").json()

    assert answer.headers["content-type"] == "application/json"
    response_schema = document["components"]["schemas"]["PredictResponse"]
    assert set(answer.json()) <= set(response_schema["properties"])
    assert response_schema["properties"]["labels"]["items"]["enum"] == LABELS

