"""Bad requests get a 4xx in one JSON error shape that names the field; never a 500."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from model_wrapper.config.settings import load_settings
from model_wrapper.http.app import create_app
from model_wrapper.predict.predictor import Predictor, Seen
from tests.wrapper.conftest import Served

GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _error(answer: object) -> dict[str, object]:
    body = answer.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "code", "message", "details"}
    assert body["error"]["status"] == answer.status_code  # type: ignore[attr-defined]
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("instance", "field", "words"), [
    ({**GOOD, "petal_width": -1}, "instances[0].petal_width", "greater than or equal to 0"),
    ({**GOOD, "sepal_length": "long"}, "instances[0].sepal_length", "valid number"),
    ({**GOOD, "sepal_length": True}, "instances[0].sepal_length", "valid number"),
    ({k: v for k, v in GOOD.items() if k != "petal_length"}, "instances[0].petal_length", "required"),
    ({**GOOD, "colour": "blue"}, "instances[0].colour", "not permitted"),
    ({**GOOD, "sepal_width": None}, "instances[0].sepal_width", "valid number"),
])
def test_invalid_instances_get_422_naming_the_field_path(iris: Served, instance: dict[str, object], field: str,
                                                         words: str) -> None:
    answer = iris.post("predict", {"instances": [GOOD, instance]})

    assert answer.status_code == 422
    error = _error(answer)
    assert error["code"] == "invalid_input"
    assert [d["field"] for d in error["details"]] == [field.replace("[0]", "[1]")]  # type: ignore[attr-defined]
    assert words in error["details"][0]["message"]  # type: ignore[index]
    assert field.replace("[0]", "[1]") in str(error["message"])


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_rejected_when_the_contract_does_not_allow_them(iris: Served, literal: str) -> None:
    body = ('{"instances": [{"sepal_length": ' + literal + ', "sepal_width": 3.5, "petal_length": 1.4, '
            '"petal_width": 0.2}]}').encode()

    answer = iris.post("predict", content=body, headers={"content-type": "application/json"})

    assert answer.status_code == 422
    assert _error(answer)["details"][0]["field"] == "instances[0].sepal_length"  # type: ignore[index]


@pytest.mark.parametrize("body", [b"", b"{", b"{'instances': []}", b"\xff\xfe", b'{"instances": [}'])
def test_malformed_json_gets_400(iris: Served, body: bytes) -> None:
    answer = iris.post("predict", content=body, headers={"content-type": "application/json"})

    assert answer.status_code == 400
    assert _error(answer)["code"] == "malformed_request"


@pytest.mark.parametrize("body", [[], {"instances": []}, {"instances": {}}, {"rows": [GOOD]}, {"instances": [1]}])
def test_json_of_the_wrong_shape_gets_422(iris: Served, body: object) -> None:
    answer = iris.post("predict", body)

    assert answer.status_code == 422
    assert _error(answer)["details"]


def test_a_batch_over_the_limit_gets_413(iris: Served) -> None:
    answer = iris.post("predict", {"instances": [GOOD] * 51})  # the session wrapper has MAX_BATCH=50

    assert answer.status_code == 413
    assert "50" in str(_error(answer)["message"])
    assert iris.post("predict", {"instances": [GOOD] * 50}).status_code == 200


def test_a_body_over_the_limit_gets_413_with_or_without_a_content_length(iris: Served) -> None:
    big = b'{"instances": [' + b" " * 70_000 + b"]}"  # the session wrapper has MAX_BODY_BYTES=65536

    declared = iris.post("predict", content=big, headers={"content-type": "application/json"})
    chunked = iris.post("predict", content=iter([big[:40_000], big[40_000:]]),
                        headers={"content-type": "application/json"})

    assert declared.status_code == 413 and _error(declared)["code"] == "payload_too_large"
    assert chunked.status_code == 413 and _error(chunked)["code"] == "payload_too_large"


@pytest.mark.parametrize("depth", [100, 5_000, 100_000])
def test_deeply_nested_json_gets_a_4xx_and_the_server_lives_on(iris: Served, depth: int) -> None:
    for body in (b"[" * depth + b"]" * depth, b'{"instances": ' + b"[" * depth + b"]" * depth + b"}",
                 b'{"a":' * depth + b"1" + b"}" * depth):
        for path in ("predict", "invocations"):
            answer = iris.post(path, content=body, headers={"content-type": "application/json"})
            assert 400 <= answer.status_code < 500, (path, depth, answer.text[:200])
    assert iris.get("health").status_code == 200


def test_unknown_paths_and_methods_answer_in_the_same_error_shape(iris: Served) -> None:
    missing = iris.get("no-such-thing")
    wrong_method = iris.get("predict")

    assert missing.status_code == 404 and _error(missing)["code"] == "not_found"
    assert wrong_method.status_code == 405 and _error(wrong_method)["code"] == "method_not_allowed"


def test_invocations_reports_unscorable_input_as_a_4xx_in_mlflows_error_shape(iris: Served) -> None:
    for body in (b'{"dataframe_records": [{"sepal_length": "x"}]}', b'{"nothing": 1}'):
        answer = iris.post("invocations", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")
        assert answer.json()["message"]
    refused = iris.post("invocations", content=b"a,b\n1,2", headers={"content-type": "text/plain"})
    assert refused.status_code == 415 and "text/csv" in refused.text


def test_an_unexpected_error_in_predict_is_a_500_in_the_same_shape_with_its_request_id_logged_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    # predict is reached before FastAPI's own error handling (model_wrapper.http.app.HotPath): its answer
    # to a bug must still be the app's.
    class Broken(Predictor):
        def predict_body(self, body: bytes, seen: Seen | None = None) -> bytes:
            raise RuntimeError("a bug")

    settings = load_settings({"MODEL_NAME": "iris", "MODEL_VERSION": "1", "MODEL_SOURCE": "s3://models/iris"})
    client = TestClient(create_app(settings, Broken("iris", "1", 10)), raise_server_exceptions=False)

    answer = client.post(f"{settings.prefix}predict", json={"instances": [GOOD]})

    assert answer.status_code == 500 and _error(answer)["code"] == "internal_error"
    assert "a bug" not in answer.text and "unexpected error while answering a request" in caplog.text
    assert len(answer.headers["x-request-id"]) == 32  # as every answer of predict carries
    metrics = client.get("/metrics").text
    assert any('endpoint="predict"' in line and 'status="500"' in line for line in metrics.splitlines())
    assert client.get(f"{settings.prefix}predict").status_code == 405  # other methods: the app's answer
