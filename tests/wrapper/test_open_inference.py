"""The Open Inference Protocol (V2 REST) on the wrapper, side by side with its real peer: MLServer
with `mlserver-mlflow` serving the same registered models (tests/wrapper/oip_servers.py). Each
request goes to both at the same path (the wrapper's pod root and its `/<slug>/api/` prefix); the
status codes must match and, on success, the outputs too (names, shapes, datatypes, values), and
the model metadata (inputs, outputs, content type).

Where MLServer fails on bad input (a 500, a dropped connection, FastAPI's 422 for a body that is
not JSON) the wrapper answers 400 `{"error": ...}` naming the input and the fault: those cases
assert both answers. The clients users have (tritonclient, KServe's) are in
tests/wrapper/test_open_inference_clients.py. The servers are the `peers` fixture (tests/wrapper/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.models import IRIS_FEATURES, iris_frame
from tests.wrapper.oip_servers import Peers

PD = {"content_type": "pd"}
IRIS = iris_frame()[0].iloc[[0, 60, 120]]


def _columns(frame: Any, datatype: str = "FP64", *, shape2: bool = False) -> list[dict[str, Any]]:
    return [{"name": name, "datatype": datatype, "shape": [len(frame), 1] if shape2 else [len(frame)],
             "data": frame[name].tolist()} for name in frame.columns]


def _iris(**change: Any) -> dict[str, Any]:
    """The iris request, with some inputs changed (or, given None, left out)."""
    inputs = [{**item, **(change.get(item["name"]) or {})} for item in _columns(IRIS[IRIS_FEATURES])
              if not (item["name"] in change and change[item["name"]] is None)]
    return {"parameters": PD, "inputs": inputs}


def _x(mode: str) -> dict[str, Any]:
    return {"parameters": {**PD, "mode": mode}, "inputs": [{"name": "x", "datatype": "FP64", "shape": [2],
                                                            "data": [1.0, 2.5]}]}


# (model, case) → request; both servers must give the same status and, on 200, the same outputs.
SAME: dict[tuple[str, str], dict[str, Any]] = {
    ("iris", "columns"): _iris(),
    ("iris", "columns shaped [n, 1]"): {"parameters": PD, "inputs": _columns(IRIS[IRIS_FEATURES], shape2=True)},
    ("iris", "columns in another order"): {"parameters": PD, "inputs": _iris()["inputs"][::-1]},
    ("iris", "without content_type (the signature says pd)"): {"inputs": _iris()["inputs"]},
    ("iris", "with an id"): {**_iris(), "id": "request-42"},
    ("iris", "one row"): {"parameters": PD, "inputs": _columns(IRIS[IRIS_FEATURES].iloc[:1])},
    ("iris", "FP32 data for FP64 columns"): _iris(**{name: {"datatype": "FP32"} for name in IRIS_FEATURES}),
    ("frames32", "FP32 and INT32 columns"): {"parameters": PD, "inputs": [
        {"name": "f32", "datatype": "FP32", "shape": [3], "data": [0.5, -1.25, 3.125]},
        {"name": "i32", "datatype": "INT32", "shape": [3], "data": [3, 7, -2]}]},
    ("typed", "BOOL, BYTES and INT64 columns"): {"parameters": PD, "inputs": [
        {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        {"name": "name", "datatype": "BYTES", "shape": [2], "data": ["alpha", "ünïcode"],
         "parameters": {"content_type": "str"}},
        {"name": "n", "datatype": "INT64", "shape": [2], "data": [3, 4]}]},
    ("one_tensor", "a tensor"): {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3],
                                             "data": [1, 2, 3, 4, 5, 6]}]},
    ("one_tensor", "a tensor, nested row-major"): {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3],
                                                               "data": [[1, 2, 3], [4, 5, 6]]}]},
    ("tensors", "two named tensors"): {"inputs": [
        {"name": "a", "datatype": "FP64", "shape": [2, 2], "data": [0.5, 1.5, 2, 3]},
        {"name": "b", "datatype": "INT64", "shape": [2], "data": [1, 2]}]},
    ("params", "a model fault"): _x("internal"),
}

# (model, case) → (request, words the wrapper's 400 must say). MLServer fails on each (see below).
BAD: dict[tuple[str, str], tuple[dict[str, Any] | bytes, str]] = {
    ("iris", "a column missing"): (_iris(petal_width=None), "input 'petal_width' is missing"),
    ("iris", "BYTES where numbers go"): (_iris(sepal_length={"datatype": "BYTES", "data": ["a", "b", "c"]}),
                                         "input 'sepal_length': datatype BYTES where the model takes FP64"),
    ("iris", "a string in FP64 data"): (_iris(sepal_width={"data": [3.5, "x", 3.0]}),
                                        "input 'sepal_width': 'x' is not a FP64 value"),
    ("iris", "a shape that does not hold the data"): (_iris(sepal_length={"shape": [4]}),
                                                      "input 'sepal_length': shape [4] holds 4 values"),
    ("iris", "columns of different lengths"): (_iris(sepal_width={"shape": [2], "data": [3.5, 3.0]}),
                                               "input 'sepal_width' has 2 rows where the inputs before it have 3"),
    ("iris", "ragged data"): (_iris(sepal_length={"data": [[5.1, 6.0], [7.0]]}),
                              "input 'sepal_length': 'data' is ragged"),
    ("iris", "an unknown datatype"): (_iris(sepal_length={"datatype": "FP128"}),
                                      "input 'sepal_length': datatype 'FP128' is not one of"),
    ("iris", "no inputs"): ({"inputs": []}, "'inputs' must be a non-empty list"),
    ("iris", "not JSON"): (b"this is not json", "the body is not JSON"),
    ("one_tensor", "the wrong width"): ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 2],
                                                     "data": [1, 2, 3, 4, 5, 6]}]},
                                        "input 'x': shape [3, 2] does not fit the model's [-1, 3]"),
    ("typed", "numbers where BOOL goes"): ({"parameters": PD, "inputs": [
        {"name": "flag", "datatype": "INT64", "shape": [1], "data": [1]},
        {"name": "name", "datatype": "BYTES", "shape": [1], "data": ["a"]},
        {"name": "n", "datatype": "INT64", "shape": [1], "data": [3]}]}, "input 'flag': datatype INT64 where the "
                                                                          "model takes BOOL"),
}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as session:
        yield session


def _post(client: httpx.Client, url: str, body: dict[str, Any] | bytes) -> httpx.Response:
    if isinstance(body, bytes):
        return client.post(url, content=body, headers={"content-type": "application/json"})
    return client.post(url, json=body)


def _ours(peers: Peers, model: str, path: str) -> list[str]:
    """The wrapper's two places for `path`: the pod root and under the model's prefix (the Ingress)."""
    served = peers.models[model]
    return [f"http://127.0.0.1:{served.wrapper.port}{path}", served.wrapper.base(served.slug) + path.lstrip("/")]


def _outputs(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(o["name"], o["shape"], o["datatype"], o["data"], o.get("parameters")) for o in answer["outputs"]]


@pytest.mark.parametrize(("model", "case"), list(SAME), ids=[f"{m}: {c}" for m, c in SAME])
def test_infer_answers_as_mlserver_does(peers: Peers, client: httpx.Client, model: str, case: str) -> None:
    body, path = SAME[(model, case)], f"/v2/models/{peers.models[model].slug}/infer"
    theirs = _post(client, peers.mlserver_root + path, body)

    for url in _ours(peers, model, path):
        ours = _post(client, url, body)
        assert ours.status_code == theirs.status_code, (ours.text, theirs.text)
        if theirs.status_code == 200:
            assert _outputs(ours.json()) == _outputs(theirs.json())
            assert (ours.json()["model_name"], ours.json()["parameters"]) == \
                (theirs.json()["model_name"], theirs.json()["parameters"])
            assert ours.json().get("id") == body.get("id", ours.json().get("id"))
        else:
            assert "the feature store is unreachable" in ours.json()["error"]


@pytest.mark.parametrize(("model", "case"), list(BAD), ids=[f"{m}: {c}" for m, c in BAD])
def test_bad_input_is_a_400_naming_the_input_where_mlserver_fails(peers: Peers, client: httpx.Client, model: str,
                                                                  case: str) -> None:
    body, words = BAD[(model, case)]
    path = f"/v2/models/{peers.models[model].slug}/infer"
    try:
        with httpx.Client(timeout=60) as fresh:  # MLServer may drop the connection
            theirs: int | str = _post(fresh, peers.mlserver_root + path, body).status_code
    except httpx.TransportError as e:
        theirs = type(e).__name__

    assert theirs in (500, 422, "ReadError", "RemoteProtocolError"), theirs
    for url in _ours(peers, model, path):
        ours = _post(client, url, body)
        assert ours.status_code == 400, ours.text
        assert list(ours.json()) == ["error"] and words in ours.json()["error"], ours.text


@pytest.mark.parametrize("model", ["iris", "frames32", "typed", "one_tensor", "tensors"])
def test_model_metadata_describes_inputs_and_outputs_as_mlserver_does(peers: Peers, client: httpx.Client,
                                                                      model: str) -> None:
    served = peers.models[model]
    path = f"/v2/models/{served.slug}"
    theirs = client.get(peers.mlserver_root + path).json()
    same = ("name", "inputs", "outputs", "parameters")

    for url in [*_ours(peers, model, path), *_ours(peers, model, f"{path}/versions/{served.model.version}")]:
        ours = client.get(url)
        assert ours.status_code == 200, ours.text
        assert {key: ours.json()[key] for key in same} == {key: theirs[key] for key in same}
        assert ours.json()["versions"] == [served.model.version] and ours.json()["platform"].startswith("mlflow")


@pytest.mark.parametrize("path", ["/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{slug}/ready",
                                  "/v2/models/{slug}/versions/{version}/ready", "/v2/models/no-such-model",
                                  "/v2/models/no-such-model/ready", "/v2/models/{slug}/versions/99",
                                  "/v2/models/{slug}/versions/99/ready"])
def test_health_metadata_and_unknown_models_answer_with_mlservers_status(peers: Peers, client: httpx.Client,
                                                                        path: str) -> None:
    served = peers.models["iris"]
    path = path.format(slug=served.slug, version=served.model.version)
    theirs = client.get(peers.mlserver_root + path)

    for url in _ours(peers, "iris", path):
        ours = client.get(url)
        assert ours.status_code == theirs.status_code, (url, ours.text, theirs.text)
        if ours.status_code == 404:
            assert "not served here" in ours.json()["error"]
    if path == "/v2":
        assert set(ours.json()) == set(theirs.json()) == {"name", "version", "extensions"}


def test_infer_on_an_unknown_model_or_version_is_a_404(peers: Peers, client: httpx.Client) -> None:
    served = peers.models["iris"]
    for path in ("/v2/models/no-such-model/infer", f"/v2/models/{served.slug}/versions/99/infer"):
        theirs = client.post(peers.mlserver_root + path, json=_iris())
        for url in _ours(peers, "iris", path):
            ours = client.post(url, json=_iris())
            assert ours.status_code == theirs.status_code == 404
            assert "not served here" in ours.json()["error"]


def test_the_registered_name_is_accepted_as_well_as_the_slug(peers: Peers, client: httpx.Client) -> None:
    served = peers.models["one_tensor"]  # its slug differs from its name (an underscore)
    assert served.slug != served.model.name
    body = SAME[("one_tensor", "a tensor")]
    by_slug, by_name = (_post(client, _ours(peers, "one_tensor", f"/v2/models/{name}/infer")[1], body)
                        for name in (served.slug, served.model.name))

    assert by_slug.status_code == by_name.status_code == 200
    assert by_name.json()["outputs"] == by_slug.json()["outputs"]
    assert client.get(_ours(peers, "one_tensor", f"/v2/models/{served.model.name}/ready")[0]).status_code == 200


def test_a_classifier_answers_probabilities_when_asked_for_them_by_name(peers: Peers, client: httpx.Client) -> None:
    served = peers.models["iris"]
    url = _ours(peers, "iris", f"/v2/models/{served.slug}/infer")[1]
    both = client.post(url, json={**_iris(), "outputs": [{"name": "output-1"}, {"name": "probabilities"}]}).json()
    unknown = client.post(url, json={**_iris(), "outputs": [{"name": "logits"}]})
    predict = client.post(served.wrapper.base(served.slug) + "predict",
                          json={"instances": IRIS[IRIS_FEATURES].to_dict(orient="records")}).json()

    names = [output["name"] for output in both["outputs"]]
    assert names == ["output-1", "probabilities"]
    probabilities = both["outputs"][1]
    assert probabilities["shape"] == [3, 3] and probabilities["datatype"] == "FP64"
    assert probabilities["data"] == [p for row in predict["probabilities"] for p in row]
    assert unknown.status_code == 400 and "'logits' is not one the model gives" in unknown.json()["error"]


def test_the_requests_parameters_are_the_models_params(peers: Peers, client: httpx.Client) -> None:
    # MLServer passes them too, but cannot encode this model's answer (a list): checked against predict.
    served = peers.models["params"]
    url = _ours(peers, "params", f"/v2/models/{served.slug}/infer")[1]
    scaled = client.post(url, json={**_x("ok"), "parameters": {**PD, "scale": 3.0}})
    predict = client.post(served.wrapper.base(served.slug) + "predict",
                          json={"instances": [{"x": 1.0}, {"x": 2.5}], "params": {"scale": 3.0}})
    refused = client.post(url, json=_x("value"))

    assert scaled.status_code == 200 and scaled.json()["outputs"][0]["data"] == predict.json()["predictions"]
    assert refused.status_code == 422 and "mode 'value' asks this model to fail" in refused.json()["error"]


def test_an_oversized_body_is_a_413_in_the_protocols_error_shape(peers: Peers, client: httpx.Client) -> None:
    served = peers.models["iris"]
    big = b" " * ((64 << 20) + 1)
    for url in _ours(peers, "iris", f"/v2/models/{served.slug}/infer"):
        answer = client.post(url, content=big, headers={"content-type": "application/json"})
        assert answer.status_code == 413
        assert "MAX_BODY_BYTES" in answer.json()["error"]


def test_the_cases_cover_success_faults_and_every_datatype(peers: Peers) -> None:
    datatypes = {item["datatype"] for body in SAME.values() for item in body["inputs"]}
    assert datatypes >= {"FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES"}
    assert {model for model, _ in SAME} == set(peers.models)
