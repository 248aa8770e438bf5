"""Conformance with the real peer: every request goes to `mlflow models serve --env-manager local`
and to the wrapper (its `/<slug>/api/invocations` and its root `/invocations`), serving the same
registered version, and the answers must be the same: status, content type and body, byte for byte.

The cases follow MLflow's `tests/pyfunc/test_scoring_server.py` and the branches of
`mlflow/pyfunc/scoring_server/__init__.py` (`invocations`, `_parse_json_data`,
`infer_and_parse_data`, the CSV and Parquet parsers, the 415s, model errors). Nothing is
normalised. `predict` is checked against the peer too: its predictions are the peer's for the same
instances. Known, deliberate differences are tested apart at the end.

Both servers of a pair run with the same hash seed and interpreter path (see `conformance.py`), so
their messages list sets in the same order and their stack traces name the same files. One thing is
normalised, because it must differ: where each server downloaded the model, which a stack trace
through a custom model's own code names (`MODEL_DIRECTORY`).
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from devstack.models import IRIS_FEATURES, iris_frame
from devstack.servers import LocalMlflow
from tests.wrapper.conformance import IMAGES, TYPED_FRAME, Pair, post_both, start_pairs, stop_pairs

JSON = "application/json"
CSV = "text/csv"
# A custom model's code, in the directory each server downloaded the model to (JSON-escaped quotes).
MODEL_DIRECTORY = re.compile(rb'File \\"/[^"]*?/(conformance_model\.py)\\"')
PARQUET = "application/vnd.apache.parquet"
IRIS = iris_frame()[0].iloc[[0, 60, 120, 149]]
FRAMES32 = pd.DataFrame({"f32": np.array([0.5, -1.25, 3.1], np.float32), "i32": np.array([3, 7, -2], np.int32)})
TYPED = [{"flag": True, "blob": base64.b64encode(b"\x00\x01binary").decode(), "when": "2024-05-01T12:00:00",
          "name": "alpha", "opt": 1.5},
         {"flag": False, "blob": base64.b64encode(b"\xffmore").decode(), "when": "2021-01-01T00:00:00", "name": "beta"}]


def _json(value: Any) -> tuple[bytes, str]:
    return json.dumps(value).encode(), JSON


def _parquet(frame: pd.DataFrame) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue(), PARQUET


def _frame_cases(frame: pd.DataFrame) -> dict[str, tuple[bytes, str | None]]:
    """The body formats of a column model, each as MLflow's tests send them."""
    records = frame.to_dict(orient="records")
    return {
        "dataframe_split": _json({"dataframe_split": frame.to_dict(orient="split")}),
        "dataframe_split without index": _json({"dataframe_split": {"columns": list(frame),
                                                                    "data": frame.values.tolist()}}),
        "dataframe_split reordered": _json({"dataframe_split": frame[list(frame)[::-1]].to_dict(orient="split")}),
        "dataframe_records": _json({"dataframe_records": records}),
        "instances": _json({"instances": records}),
        "inputs as columns": _json({"inputs": frame.to_dict(orient="list")}),
        "inputs as records": _json({"inputs": records}),
        "charset=UTF-8": (json.dumps({"dataframe_records": records}).encode(), f"{JSON}; charset=UTF-8"),
        "csv": (frame.to_csv(index=False).encode(), CSV),
        "csv with charset": (frame.to_csv(index=False).encode(), f"{CSV}; charset=utf-8"),
        "parquet": _parquet(frame),
        "missing a column": _json({"dataframe_records": [{k: v for k, v in r.items() if k != list(frame)[-1]}
                                                         for r in records]}),
        "an extra column": _json({"dataframe_records": [{**r, "unexpected": 1} for r in records]}),
        "a string where a number goes": _json({"dataframe_records": [{**records[0], frame.columns[0]: "x"}]}),
    }


# Errors of the request, after MLflow's own test cases: the same body to every model would say the
# same, so they go to two models with different flavours.
ERROR_CASES: dict[str, tuple[bytes, str | None]] = {
    "malformed JSON": (b"this is,,,, not valid json", JSON),
    "not UTF-8": (b'{"dataframe_records": [{"a": "\xff\xfe"}]}', JSON),
    "a number": _json(1),
    "a string": _json("1"),
    "a list": _json([1]),
    "no format key": _json({"not": "a serialized dataframe"}),
    "two format keys": _json({"dataframe_records": [], "dataframe_split": {"data": []}}),
    "records given as split": _json({"dataframe_records": {"columns": ["a"], "data": [[1]]}}),
    "split given as records": _json({"dataframe_split": [{"a": 1}]}),
    "split with a bad index": _json({"dataframe_split": {"index": [1, 2], "data": [[1], [2], [3]]}}),
    "split with an unknown key": _json({"dataframe_split": {"data": [[1]], "rows": 1}}),
    "an incompatible frame": _json({"dataframe_split": pd.DataFrame(np.arange(10)).to_dict(orient="split")}),
    "signature_name": _json({"instances": [[1]], "signature_name": "serving_default"}),
    "instances and inputs": _json({"instances": [[1]], "inputs": [[1]]}),
    "ragged instances": _json({"instances": [{"a": [1, 2]}, {"a": [1]}, {"b": 1}]}),
    "an LLM-style body": _json({"messages": [{"role": "user", "content": "hi"}]}),
    "empty CSV": (b"", CSV),
    "CSV that is not a frame": (b'a,b\n1,2,3\n"x', CSV),
    "CSV not UTF-8": (b"a,b\n\xff,\xfe\n", CSV),
    "Parquet that is not Parquet": (b"PAR1 not really", PARQUET),
    "an unsupported content type": (b'{"dataframe_records": []}', "not_a_supported_content_type"),
    "text/plain": (b"a,b\n1,2", "text/plain"),
    "an unknown content-type parameter": (b'{"dataframe_records": []}', f"{JSON}; something=something"),
    "a charset other than UTF-8": (b'{"dataframe_records": []}', f"{JSON}; charset=latin-1"),
    "an empty body": (b"", JSON),
}


def _cases() -> list[tuple[str, str, bytes, str | None]]:
    cases: dict[tuple[str, str], tuple[bytes, str | None]] = {}
    for model, frame in (("frames32", FRAMES32), ("lightgbm", IRIS)):
        cases |= {(model, name): case for name, case in _frame_cases(frame).items()}
    for model in ("frames32", "lightgbm"):
        cases |= {(model, name): case for name, case in ERROR_CASES.items()}
    cases[("lightgbm", "15,000 rows (1.3 MB)")] = _json(
        {"dataframe_records": pd.concat([iris_frame()[0]] * 100).to_dict(orient="records")})
    typed = pd.DataFrame(TYPED)
    cases |= {
        ("typed", "dataframe_records, the optional column absent in one"): _json({"dataframe_records": TYPED}),
        ("typed", "dataframe_split"): _json({"dataframe_split": typed.to_dict(orient="split")}),
        ("typed", "inputs"): _json({"inputs": {k: [r.get(k) for r in TYPED] for k in TYPED[0]}}),
        ("typed", "instances"): _json({"instances": TYPED}),
        ("typed", "without the optional column"): _json({"dataframe_records": [
            {k: v for k, v in r.items() if k != "opt"} for r in TYPED]}),
        ("typed", "binary that is not base64"): _json({"dataframe_records": [{**TYPED[0], "blob": "not base64!"}]}),
        ("typed", "a date that is no date"): _json({"dataframe_records": [{**TYPED[0], "when": "2024-13-45"}]}),
        ("typed", "dates in two formats"): _json({"dataframe_records": [TYPED[0], {**TYPED[1], "when": "2021-01-01"}]}),
        ("typed", "a required column missing"): _json({"dataframe_records": [{"flag": True, "name": "x"}]}),
        ("typed", "csv"): (typed.drop(columns=["blob"]).to_csv(index=False).encode(), CSV),
        ("typed", "parquet"): _parquet(TYPED_FRAME),
        ("one_tensor", "inputs"): _json({"inputs": {"x": [[1, 2, 3], [4, 5, 6]]}}),
        ("one_tensor", "inputs, unnamed"): _json({"inputs": [[1, 2, 3], [4, 5, 6]]}),
        ("one_tensor", "instances of objects"): _json({"instances": [{"x": [1, 2, 3]}, {"x": [4, 5, 6]}]}),
        ("one_tensor", "instances of rows"): _json({"instances": [[1, 2, 3], [4, 5, 6]]}),
        ("one_tensor", "the wrong shape"): _json({"inputs": {"x": [[1, 2], [4, 5]]}}),
        ("one_tensor", "strings"): _json({"inputs": {"x": [["a", "b", "c"]]}}),
        ("one_tensor", "dataframe_split"): _json({"dataframe_split": {"columns": ["x"], "data": [[[1, 2, 3]]]}}),
        ("tensors", "inputs (MLflow's Keras case)"): _json({"inputs": {"a": [[0.5, 1.5], [2, 3]], "b": [1, 2]}}),
        ("tensors", "instances (MLflow's Keras case)"): _json({"instances": [{"a": [0.5, 1.5], "b": 1},
                                                                             {"a": [2, 3], "b": 2}]}),
        ("tensors", "a tensor missing"): _json({"inputs": {"a": [[0.5, 1.5]]}}),
        ("tensors", "lengths that differ"): _json({"instances": [{"a": [0.5, 1.5], "b": 1}, {"a": [2, 3]}]}),
        ("tensors", "a float where int32 goes"): _json({"inputs": {"a": [[0.5, 1.5]], "b": [1.7]}}),
    }
    image = IMAGES.tolist()
    cases |= {
        ("image", "inputs"): _json({"inputs": {"img": image}}),
        ("image", "inputs, unnamed"): _json({"inputs": image}),
        ("image", "instances of objects"): _json({"instances": [{"img": picture} for picture in image]}),
        ("image", "instances of images"): _json({"instances": image}),
        ("image", "a row short"): _json({"inputs": {"img": [picture[:27] for picture in image]}}),
        ("image", "ragged"): _json({"inputs": {"img": [image[0], image[1][:27]]}}),
        ("image", "strings"): _json({"inputs": {"img": [[["x"] * 28] * 28]}}),
        ("image", "dataframe_split"): _json({"dataframe_split": {"columns": ["img"], "data": [[image[0]]]}}),
        ("image", "csv"): (b"img\n1\n", CSV),
        ("strings", "inputs"): _json({"inputs": ["alpha", "beta", "gamma"]}),
        ("strings", "instances"): _json({"instances": ["alpha", "", "ünïcode"]}),
        ("strings", "numbers"): _json({"inputs": [1, 2.5]}),
        ("strings", "a list in a string's place"): _json({"inputs": [["alpha", "beta"]]}),
        ("strings", "dataframe_records"): _json({"dataframe_records": [{"0": "alpha"}]}),
        ("uneven", "inputs"): _json({"inputs": {"a": [[[0, 1, 2]], [[3, 4, 5]]], "b": [1, 2]}}),
        ("uneven", "inputs of another length"): _json({"inputs": {"a": [[[0.5, 1, 2], [3, 4, 5], [6, 7, 8]]],
                                                                  "b": [7]}}),
        ("uneven", "instances"): _json({"instances": [{"a": [[0, 1, 2], [3, 4, 5]], "b": 1},
                                                      {"a": [[6, 7, 8], [9, 10, 11]], "b": 2}]}),
        ("uneven", "instances of differing lengths"): _json({"instances": [{"a": [[0, 1, 2]], "b": 1},
                                                                           {"a": [[6, 7, 8], [9, 10, 11]], "b": 2}]}),
        ("uneven", "a tensor missing"): _json({"inputs": {"a": [[[0, 1, 2]]]}}),
        ("uneven", "a row of 2 where 3 go"): _json({"inputs": {"a": [[[0, 1]]], "b": [1]}}),
        ("uneven", "a float where int64 goes"): _json({"inputs": {"a": [[[0, 1, 2]]], "b": [1.5]}}),
    }
    split = {"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.5]]}}
    for name, params in {
        "no params": None, "scale": {"scale": 2.0}, "an integer scale": {"scale": 3},
        "a scale that is no number": {"scale": "abc"}, "a datetime": {"when": "2024-01-02T03:04:05"},
        "a datetime that is none": {"when": "invalid_value1"}, "an unknown param (ignored)": {"invalid_param": 1},
        "params that are no object": [1, 2], "a model that raises MlflowException INTERNAL_ERROR": {"mode": "internal"},
        "a model that raises ValueError": {"mode": "value"},
        "a model whose answer is not JSON": {"mode": "unserialisable"},
    }.items():
        cases[("params", name)] = _json(split if params is None else {**split, "params": params})
    cases[("params", "input the model rejects")] = _json({"dataframe_records": [{"x": -1.0}]})
    cases[("params", "csv (no params)")] = (b"x\n1.0\n2.5\n", CSV)
    return [(model, name, body, content_type) for (model, name), (body, content_type) in cases.items()]


CASES = _cases()


@pytest.fixture(scope="session")
def pairs(mlflow_server: LocalMlflow) -> Iterator[dict[str, Pair]]:
    started = start_pairs(mlflow_server)
    yield started
    stop_pairs(started)


@pytest.fixture(scope="session")
def client() -> Iterator[httpx.Client]:
    # A fresh connection per request: uvicorn drops the connection after MLflow's unhandled 500s.
    with httpx.Client(timeout=60, headers={"connection": "close"}) as session:
        yield session


@pytest.mark.parametrize(("model", "case", "body", "content_type"), CASES,
                         ids=[f"{model}: {name}" for model, name, _, _ in CASES])
def test_invocations_answer_exactly_as_mlflow_models_serve(pairs: dict[str, Pair], client: httpx.Client, model: str,
                                                           case: str, body: bytes, content_type: str | None) -> None:
    theirs, ours, root = post_both(pairs[model], body, content_type, client)

    for answer in (ours, root):
        assert (answer.status_code, answer.headers["content-type"]) == \
            (theirs.status_code, theirs.headers["content-type"]), theirs.text[:2000]
        assert comparable(answer.content) == comparable(theirs.content), _difference(answer.text, theirs.text)


def comparable(body: bytes) -> bytes:
    return MODEL_DIRECTORY.sub(rb'File \\"<model directory>/\1\\"', body)


def _difference(ours: str, theirs: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    low, high = max(0, at - 300), at + 300
    return f"differ at {at}:\nwrapper: …{ours[low:high]}\nmlflow:  …{theirs[low:high]}"


def test_the_cases_cover_every_model_and_answers_of_every_kind(pairs: dict[str, Pair], client: httpx.Client) -> None:
    statuses = {}
    for model, name, body, content_type in CASES:
        theirs = client.post(pairs[model].mlflow_root + "/invocations", content=body,
                             headers={"content-type": content_type} if content_type else {})
        statuses[(model, name)] = theirs.status_code
    assert {model for model, _ in statuses} == set(pairs)
    assert set(statuses.values()) >= {200, 400, 415, 500}
    assert statuses[("params", "a model that raises MlflowException INTERNAL_ERROR")] == 500
    assert statuses[("lightgbm", "15,000 rows (1.3 MB)")] == 200
    # The models without fields are served, and their tensors' shapes enforced, by MLflow's own code.
    assert [statuses[("image", "inputs")], statuses[("image", "a row short")]] == [200, 400]
    assert [statuses[("uneven", "inputs of another length")], statuses[("uneven", "a row of 2 where 3 go")]] == \
        [200, 400]
    assert statuses[("strings", "inputs")] == 200


def test_every_model_became_ready_by_predicting_its_logged_example_in_the_signatures_dtypes(
        pairs: dict[str, Pair], client: httpx.Client) -> None:
    # float32 and int32 frames used to fail here: the examples were predicted from a float64 frame.
    for pair in (pair for name, pair in pairs.items() if name not in WITHOUT_FIELDS):
        metadata = client.get(pair.api + "metadata").json()
        assert metadata["contract"]["examples"], pair.name
        openapi = client.get(pair.api + "openapi.json").json()
        answer = openapi["paths"][f"/{pair.slug}/api/predict"]["post"]["responses"]["200"]["content"]
        assert len(answer["application/json"]["example"]["predictions"]) == len(metadata["contract"]["examples"])


# --- tensors that cannot be fields: invocations only ---------------------------------------------------

WITHOUT_FIELDS = {"image": "img: a float32 tensor of shape (-1, 28, 28)", "strings": "a str tensor of shape (-1,)",
                  "uneven": "a: a float64 tensor of shape (-1, -1, 3)"}


@pytest.mark.parametrize("model", sorted(WITHOUT_FIELDS))
def test_a_model_whose_inputs_cannot_be_fields_documents_invocations_with_mlflows_own_serving_example(
        pairs: dict[str, Pair], client: httpx.Client, model: str) -> None:
    pair = pairs[model]
    saved = Path(mlflow.artifacts.download_artifacts(pair.model.source, dst_path=str(pair.wrapper.workdir / "saved")))
    document = client.get(pair.api + "openapi.json").json()
    operation = document["paths"][f"/{pair.slug}/api/invocations"]["post"]
    example = operation["requestBody"]["content"]["application/json"]["example"]
    peer = client.post(pair.mlflow_root + "/invocations", json=example)

    assert f"/{pair.slug}/api/predict" not in document["paths"]
    assert example == json.loads((saved / "serving_input_example.json").read_text())
    assert peer.status_code == 200 and operation["responses"]["200"]["content"]["application/json"]["example"] == \
        peer.json(), "the start-up test answered the saved example as mlflow models serve does"
    schema = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["inputs"]
    assert WITHOUT_FIELDS[model] in schema["description"]


@pytest.mark.parametrize("model", sorted(WITHOUT_FIELDS))
def test_predict_on_a_model_without_fields_is_a_404_that_points_at_invocations(
        pairs: dict[str, Pair], client: httpx.Client, model: str) -> None:
    answer = client.post(pairs[model].api + "predict", json={"instances": [{"x0": 1}]})
    metadata = client.get(pairs[model].api + "metadata").json()

    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert WITHOUT_FIELDS[model] in message and "POST it to invocations" in message, message
    assert metadata["contract"]["inputs"] == {} and metadata["contract_origin"] == "model signature"


# --- predict, against the peer's answers -----------------------------------------------------------

PREDICT_CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any] | None]] = {
    # model: (predict instances, the same input as an invocations body, params)
    "frames32": (FRAMES32.to_dict(orient="records"), {"dataframe_records": FRAMES32.to_dict(orient="records")}, None),
    "typed": (TYPED, {"dataframe_records": TYPED}, None),
    "one_tensor": ([{"x0": 1, "x1": 2, "x2": 3}, {"x0": 4.5, "x1": 5, "x2": 6}],
                   {"inputs": {"x": [[1, 2, 3], [4.5, 5, 6]]}}, None),
    "tensors": ([{"a_0": 0.5, "a_1": 1.5, "b": 1}, {"a_0": 2, "a_1": 3, "b": 2}],
                {"inputs": {"a": [[0.5, 1.5], [2, 3]], "b": [1, 2]}}, None),
    "params": ([{"x": 1.0}, {"x": 2.5}], {"dataframe_records": [{"x": 1.0}, {"x": 2.5}]},
               {"scale": 4.0, "when": "2024-01-02T03:04:05"}),
    "lightgbm": (IRIS.to_dict(orient="records"), {"dataframe_records": IRIS.to_dict(orient="records")}, None),
}


@pytest.mark.parametrize("model", sorted(PREDICT_CASES))
def test_predict_gives_the_peers_predictions(pairs: dict[str, Pair], client: httpx.Client, model: str) -> None:
    instances, invocation, params = PREDICT_CASES[model]
    peer = client.post(pairs[model].mlflow_root + "/invocations",
                       json={**invocation, **({"params": params} if params else {})})
    ours = client.post(pairs[model].api + "predict",
                       json={"instances": instances, **({"params": params} if params else {})})

    assert peer.status_code == ours.status_code == 200, ours.text
    assert ours.json()["predictions"] == peer.json()["predictions"]


def test_a_lightgbm_classifier_answers_probabilities_and_labels(pairs: dict[str, Pair], client: httpx.Client) -> None:
    pair = pairs["lightgbm"]
    answer = client.post(pair.api + "predict", json={"instances": IRIS.to_dict(orient="records")}).json()

    assert answer["probabilities"] == pair.model.model.predict_proba(IRIS).tolist()
    assert answer["labels"] == [["setosa", "versicolor", "virginica"][p] for p in answer["predictions"]]


def test_predict_params_are_checked_against_the_params_schema_and_documented(pairs: dict[str, Pair],
                                                                             client: httpx.Client) -> None:
    pair = pairs["params"]
    wrong = client.post(pair.api + "predict", json={"instances": [{"x": 1.0}], "params": {"scale": "abc"}})
    unknown = client.post(pair.api + "predict", json={"instances": [{"x": 1.0}], "params": {"sclae": 2}})
    document = client.get(pair.api + "openapi.json").json()

    assert wrong.status_code == 422 and wrong.json()["error"]["details"][0]["field"] == "params.scale"
    assert unknown.status_code == 422 and unknown.json()["error"]["details"][0]["field"] == "params.sclae"
    params = document["components"]["schemas"]["Params"]["properties"]
    assert params["scale"]["type"] == "number" and params["scale"]["default"] == 1.0
    assert params["mode"] == {**params["mode"], "type": "string", "default": "ok"}
    assert params["when"]["format"] == "date-time" and params["when"]["default"] == "2023-07-01"


@pytest.mark.parametrize(("mode", "status", "words"), [
    ("internal", 500, "the feature store is unreachable"),
    ("unserialisable", 500, "cannot be answered as JSON"),
    ("value", 422, "mode 'value' asks this model to fail"),
])
def test_predict_tells_model_faults_from_rejected_input_with_the_whole_reason(
        pairs: dict[str, Pair], client: httpx.Client, mode: str, status: int, words: str) -> None:
    answer = client.post(pairs["params"].api + "predict", json={"instances": [{"x": 1.0}], "params": {"mode": mode}})

    assert answer.status_code == status
    assert words in answer.json()["error"]["message"]


def test_mlflows_scoring_server_client_drives_a_wrapper_through_its_root_routes(pairs: dict[str, Pair]) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    pair = pairs["lightgbm"]
    ours = ScoringServerClient("127.0.0.1", pair.wrapper.port)
    theirs = ScoringServerClient("127.0.0.1", pair.mlflow_port)
    ours.wait_server_ready(timeout=30)
    ours.ping()

    assert ours.get_version() == theirs.get_version()
    frame = IRIS[IRIS_FEATURES]
    assert ours.invoke(frame).get_predictions().equals(theirs.invoke(frame).get_predictions())


def test_mlflows_scoring_server_client_drives_a_wrapper_through_its_prefix_as_behind_an_ingress(
        pairs: dict[str, Pair]) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    pair = pairs["lightgbm"]
    # The client builds `http://{host}:{port}` + "/ping": the prefix rides on the port, as an Ingress URL would.
    ours = ScoringServerClient("127.0.0.1", f"{pair.wrapper.port}/{pair.slug}/api")
    theirs = ScoringServerClient("127.0.0.1", pair.mlflow_port)
    ours.wait_server_ready(timeout=30)
    ours.ping()

    assert ours.url_prefix.endswith(f"/{pair.slug}/api")
    assert ours.get_version() == theirs.get_version()
    frame = IRIS[IRIS_FEATURES]
    assert ours.invoke(frame).get_predictions().equals(theirs.invoke(frame).get_predictions())


PROBES = [("/ping", "/ping"), ("/health", "/health"), ("/version", "/version"),
          ("/ping", "/{slug}/api/ping"), ("/version", "/{slug}/api/version")]


@pytest.mark.parametrize(("theirs_path", "our_path"), PROBES, ids=[ours for _, ours in PROBES])
def test_the_probes_answer_as_mlflow_models_serve_at_the_root_and_under_the_prefix(
        pairs: dict[str, Pair], client: httpx.Client, theirs_path: str, our_path: str) -> None:
    pair = pairs["frames32"]
    theirs = client.get(pair.mlflow_root + theirs_path)
    ours = client.get(pair.wrapper_root + our_path.format(slug=pair.slug))

    assert (ours.status_code, ours.headers["content-type"], ours.content) == \
        (theirs.status_code, theirs.headers["content-type"], theirs.content)


# --- deliberate differences -------------------------------------------------------------------------


def test_a_body_over_the_limit_gets_413_naming_the_limit_and_its_variable(pairs: dict[str, Pair],
                                                                          client: httpx.Client) -> None:
    # MLflow reads any body; the wrapper stops at MAX_BODY_BYTES (64 MiB by default) before reading it.
    pair = pairs["frames32"]
    big = b" " * ((64 << 20) + 1)
    answers = [client.post(url, content=big, headers={"content-type": JSON})
               for url in (pair.api + "invocations", pair.wrapper_root + "/invocations", pair.api + "predict")]

    assert [a.status_code for a in answers] == [413, 413, 413]
    assert answers[0].json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    for message in (answers[0].json()["message"], answers[2].json()["error"]["message"]):
        assert "67108864 bytes (64 MiB)" in message and "MAX_BODY_BYTES" in message


def test_json_nested_too_deeply_is_a_400_where_mlflow_answers_500(pairs: dict[str, Pair], client: httpx.Client) -> None:
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    theirs, ours, root = post_both(pairs["frames32"], body, JSON, client)

    assert theirs.status_code == 500  # Python's RecursionError escapes MLflow's handler
    assert ours.status_code == root.status_code == 400
    assert ours.json()["error_code"] == "BAD_REQUEST"


def test_a_request_without_a_content_type_is_a_415_where_mlflow_answers_500(pairs: dict[str, Pair],
                                                                           client: httpx.Client) -> None:
    body = json.dumps({"dataframe_records": FRAMES32.to_dict(orient="records")}).encode()
    theirs, ours, root = post_both(pairs["frames32"], body, None, client)

    assert theirs.status_code == 500  # MLflow splits the missing header: AttributeError
    assert ours.status_code == root.status_code == 415
    assert "Got ''" in ours.text
