"""The wrapper's life: liveness at once, readiness only after the examples, and every way start-up
fails (bad settings, no contract, contract vs signature, unloadable model) ending in a non-zero exit
with the reason in TERMINATION_LOG."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from devstack.models import IRIS_CONTRACT
from devstack.servers import LocalMlflow
from model_wrapper.config.settings import load_settings
from model_wrapper.contract.naming import model_slug
from model_wrapper.contract.spec import HOW_TO_ADD
from model_wrapper.errors import LoadFailure
from model_wrapper.http.app import create_app
from model_wrapper.predict.predictor import Predictor
from model_wrapper.server import EXIT_LOAD_FAILED, EXIT_SOURCES_UNAVAILABLE
from tests.wrapper.conftest import Served, WrapperProcess, model_env, serve, unique
from tests.wrapper.models import log_iris_model

MISMATCHED = """\
description: Forgets petal_width, which the model needs.
task: classification
inputs:
  sepal_length: {type: number}
  sepal_width:  {type: number}
  petal_length: {type: number}
"""
RUN_CONTRACT = IRIS_CONTRACT.replace("title: Iris species", "title: Iris from the run")


def _status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_health_answers_while_the_model_loads_and_ready_only_after_the_examples(iris: Served,
                                                                                mlflow_server: LocalMlflow) -> None:
    wrapper = WrapperProcess(model_env(iris.model, mlflow_server)).start()
    try:
        wrapper.wait_until(wrapper.base(iris.slug) + "health")
        status, body = _status(wrapper.base(iris.slug) + "ready")
        assert status == 503, "ready must wait for the model, which takes seconds to load"
        assert httpx.Response(503, content=body).json()["error"]["code"] == "not_ready"
        wrapper.wait_until(wrapper.base(iris.slug) + "ready")
        deadline = time.monotonic() + 10
        while "ready on" not in wrapper.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "ready on" in wrapper.log()
    finally:
        wrapper.stop()


def test_ready_waits_for_the_contract_examples_to_be_predicted(iris_model: Any, mlflow_server: LocalMlflow,
                                                               tmp_path: Path) -> None:
    from model_wrapper.loading.mlflow_loader import load_model

    settings = load_settings(model_env(iris_model, mlflow_server))
    predictor = Predictor(settings.model_name, settings.model_version, settings.max_batch)
    client = TestClient(create_app(settings, predictor))
    assert client.get(f"{settings.prefix}ready").json()["error"]["message"] == "the model is still loading"

    predictor.install(load_model(settings, tmp_path))
    assert client.get(f"{settings.prefix}ready").status_code == 503

    predictor.warm_up()
    assert client.get(f"{settings.prefix}ready").status_code == 200


def test_metadata_names_the_model_its_run_and_its_contract(iris: Served) -> None:
    metadata = iris.get("metadata").json()

    assert metadata["name"] == iris.model.name and metadata["version"] == iris.model.version
    assert metadata["run_id"] == iris.model.run_id
    assert metadata["contract_origin"] == "model's extra_files/contract.yaml"
    assert metadata["contract"]["title"] == "Iris species"
    assert metadata["contract"]["labels"] == ["setosa", "versicolor", "virginica"]
    assert metadata["fast_path"] is True


def test_metrics_count_requests_errors_and_latency_by_model_and_version(iris: Served) -> None:
    def count(text: str, metric: str, **labels: str) -> float:
        wanted = {"model": iris.model.name, "version": iris.model.version, **labels}
        for line in text.splitlines():
            name, _, rest = line.partition("{")
            if name == metric and dict(re.findall(r'(\w+)="([^"]*)"', rest.split("}")[0])) == wanted:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = iris.client.get(iris.base.replace(f"/{iris.slug}/api/", "/metrics")).text
    iris.post("predict", {"instances": [{"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1}]})
    iris.post("predict", {"instances": [{"sepal_length": -1}]})
    after = iris.client.get(iris.base.replace(f"/{iris.slug}/api/", "/metrics")).text

    ok = {"endpoint": "predict", "status": "200"}
    bad = {"endpoint": "predict", "status": "422"}
    assert count(after, "model_wrapper_requests_total", **ok) == count(before, "model_wrapper_requests_total", **ok) + 1
    assert count(after, "model_wrapper_errors_total", **bad) == count(before, "model_wrapper_errors_total", **bad) + 1
    assert count(after, "model_wrapper_request_duration_seconds_count", endpoint="predict") >= 2
    assert count(after, "model_wrapper_request_duration_seconds_bucket", endpoint="predict", le="+Inf") >= 2


def test_without_a_contract_the_api_is_derived_from_the_signature(mlflow_server: LocalMlflow) -> None:
    model = log_iris_model(unique("wrapper-derived"), contract=None)

    for served in serve(model, mlflow_server):
        metadata = served.get("metadata").json()
        assert metadata["contract_origin"] == "model signature"
        assert metadata["contract"]["examples"], "the input example becomes the contract's examples"
        instance = served.get("openapi.json").json()["components"]["schemas"]["Instance"]
        assert sorted(instance["properties"]) == ["petal_length", "petal_width", "sepal_length", "sepal_width"]
        answer = served.post("predict", {"instances": metadata["contract"]["examples"]})
        assert answer.status_code == 200 and "labels" not in answer.json()


def test_a_contract_in_the_run_artifacts_is_used_when_the_model_has_none(mlflow_server: LocalMlflow,
                                                                         tmp_path: Path) -> None:
    from model_wrapper.loading.mlflow_loader import load_model

    model = log_iris_model(unique("wrapper-run-contract"), contract=None, run_contract=RUN_CONTRACT)

    loaded = load_model(load_settings(model_env(model, mlflow_server)), tmp_path)

    assert loaded.contract_origin == "run's contract.yaml"
    assert loaded.contract.title == "Iris from the run"


def test_a_contract_that_disagrees_with_the_signature_stops_the_wrapper_naming_the_field(
        mlflow_server: LocalMlflow) -> None:
    model = log_iris_model(unique("wrapper-mismatch"), contract=MISMATCHED)
    wrapper = WrapperProcess(model_env(model, mlflow_server)).start()
    assert wrapper.exit_code() == EXIT_LOAD_FAILED

    reason = wrapper.termination_log.read_text()
    assert "petal_width" in reason and "signature" in reason
    assert reason.count("\n") == 1, "one line, as Kubernetes shows it"
    assert "cannot serve" in wrapper.log() and "petal_width" in wrapper.log()


def test_no_contract_and_no_signature_stops_the_wrapper_saying_how_to_add_one(mlflow_server: LocalMlflow) -> None:
    model = log_iris_model(unique("wrapper-bare"), contract=None, signature=False)
    wrapper = WrapperProcess(model_env(model, mlflow_server)).start()
    assert wrapper.exit_code() == EXIT_LOAD_FAILED

    assert HOW_TO_ADD in wrapper.termination_log.read_text()


@pytest.mark.parametrize(("contract", "words"), [
    ("inputs: [", "not valid YAML"),
    (IRIS_CONTRACT.replace("task:", "tsk:"), "tsk: unknown key"),
    (IRIS_CONTRACT.replace("labels: [setosa, versicolor, virginica]", "labels: [setosa, other]"), "2 labels"),
])
def test_an_unusable_contract_is_a_load_failure_that_says_what_to_fix(mlflow_server: LocalMlflow, contract: str,
                                                                      words: str, tmp_path: Path) -> None:
    from model_wrapper.loading.mlflow_loader import load_model

    model = log_iris_model(unique("wrapper-bad-contract"), contract=contract)
    settings = load_settings(model_env(model, mlflow_server))
    predictor = Predictor(settings.model_name, settings.model_version, settings.max_batch)

    with pytest.raises(LoadFailure, match=words):
        predictor.install(load_model(settings, tmp_path))


def test_a_model_that_cannot_be_downloaded_is_a_load_failure_naming_the_source(mlflow_server: LocalMlflow,
                                                                                tmp_path: Path) -> None:
    from model_wrapper.loading.mlflow_loader import load_model

    env = {**mlflow_server.client_env(), "MODEL_NAME": "ghost", "MODEL_VERSION": "1",
           "MODEL_SOURCE": "s3://models/does/not/exist"}

    with pytest.raises(LoadFailure, match="could not download the model from s3://models/does/not/exist"):
        load_model(load_settings(env), tmp_path)


@pytest.mark.parametrize(("down", "through"), [("MLFLOW_S3_ENDPOINT_URL", "models:/m-<id>"),
                                             ("MLFLOW_S3_ENDPOINT_URL", "runs:/<run>/model"),
                                             ("MLFLOW_TRACKING_URI", "models:/<name>/<version>")])
def test_a_model_whose_sources_are_down_exits_with_its_own_code_so_the_version_is_not_blamed(
        down: str, through: str, iris_model: Any, mlflow_server: LocalMlflow) -> None:
    """S3 or MLflow unreachable while the model loads: EXIT_SOURCES_UNAVAILABLE, which the watcher never charges
    to the version, and the reason in the termination message as for any failed load."""
    with socket.socket() as closed:  # a port nothing listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{closed.getsockname()[1]}"
    source = {"models:/m-<id>": iris_model.source, "runs:/<run>/model": f"runs:/{iris_model.run_id}/model",
              "models:/<name>/<version>": f"models:/{iris_model.name}/{iris_model.version}"}[through]
    wrapper = WrapperProcess(model_env(iris_model, mlflow_server, MODEL_SOURCE=source, **{down: address},
                                       AWS_MAX_ATTEMPTS="1")).start()

    assert wrapper.exit_code() == EXIT_SOURCES_UNAVAILABLE, wrapper.log()[-2000:]
    assert "could not download the model" in wrapper.termination_log.read_text()


@pytest.mark.parametrize(("env", "variable"), [
    ({"MODEL_NAME": "m", "MODEL_VERSION": "1"}, "MODEL_SOURCE"),
    ({"MODEL_NAME": "m", "MODEL_VERSION": "1", "MODEL_SOURCE": "/etc/passwd"}, "MODEL_SOURCE"),
    ({"MODEL_NAME": "m", "MODEL_VERSION": "1", "MODEL_SOURCE": "models:/m/1", "PORT": "http"}, "PORT"),
    ({"MODEL_NAME": "m", "MODEL_VERSION": "1", "MODEL_SOURCE": "models:/m/1", "MODEL_SLUG": "Not A Slug"},
     "MODEL_SLUG"),
])
def test_a_bad_environment_stops_the_process_naming_the_variable(env: dict[str, str], variable: str) -> None:
    wrapper = WrapperProcess({"MODEL_SOURCE": "", **env}).start()
    assert wrapper.exit_code(30) == 2

    assert variable in wrapper.termination_log.read_text()
    assert variable in wrapper.log() and "Traceback" not in wrapper.log()  # one line that says what to fix


@pytest.mark.parametrize("form", ["models:/m-<id>", "models:/<name>/<version>", "runs:/<run>/model", "s3://"])
def test_every_form_of_model_source_loads_the_same_model(form: str, iris_model: Any, mlflow_server: LocalMlflow,
                                                         tmp_path: Path) -> None:
    """What a version's source may be: MLflow 3's logged model, a registry URI, an MLflow 2 style run
    URI, or the artifact location itself (the watcher passes the version's source as it is)."""
    from mlflow import MlflowClient

    from model_wrapper.loading.mlflow_loader import load_model

    client = MlflowClient()
    source = {
        "models:/m-<id>": iris_model.source,
        "models:/<name>/<version>": f"models:/{iris_model.name}/{iris_model.version}",
        "runs:/<run>/model": f"runs:/{iris_model.run_id}/model",
        "s3://": client.get_model_version_download_uri(iris_model.name, iris_model.version),
    }[form]
    assert source.startswith(form.split("<")[0])
    settings = load_settings(model_env(iris_model, mlflow_server, MODEL_SOURCE=source))

    loaded = load_model(settings, tmp_path)

    assert loaded.contract.title == "Iris species" and loaded.backend.fast
    features = [(5.1, 3.5, 1.4, 0.2), (6.7, 3.0, 5.2, 2.3)]
    assert loaded.backend.predict(features)[0].tolist() == iris_model.model.predict(features).tolist()


@pytest.mark.parametrize("ending", ["SIGTERM", "SIGINT", "failed load"])
def test_no_model_wrapper_folder_is_left_in_the_temp_directory_however_the_process_ends(
        ending: str, iris_model: Any, mlflow_server: LocalMlflow, tmp_path: Path) -> None:
    """What the local target and `make demo` do to a wrapper (SIGTERM), a person at a terminal (Ctrl-C), and a
    model that cannot load: each start used to leave a `model-wrapper-*` folder with the model's files in it."""
    source = iris_model.source if ending != "failed load" else "s3://models/does/not/exist"
    wrapper = WrapperProcess(model_env(iris_model, mlflow_server, MODEL_SOURCE=source, TMPDIR=str(tmp_path))).start()
    if ending == "failed load":
        assert wrapper.exit_code() == EXIT_LOAD_FAILED
    else:
        wrapper.wait_until(wrapper.base(model_slug(iris_model.name)) + "ready")
        assert wrapper.process is not None
        os.killpg(wrapper.process.pid, getattr(signal, ending))
        wrapper.process.wait(30)

    assert sorted(p.name for p in tmp_path.iterdir()) == [], wrapper.log()
