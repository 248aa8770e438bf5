"""`invocations` speaks every MLflow scoring format and answers as `mlflow models serve` does.

The reference is a real `mlflow models serve --env-manager local` on the same model, and MLflow's
pyfunc in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.models import IRIS_FEATURES, iris_frame
from devstack.servers import LocalMlflow, free_port, stop_process, wait_http
from tests.wrapper.conftest import Served

ROWS = iris_frame()[0].iloc[[0, 60, 120, 149]]
BODIES: dict[str, Any] = {
    "dataframe_split": {"dataframe_split": {"columns": IRIS_FEATURES, "data": ROWS.values.tolist()}},
    "dataframe_split_reordered": {"dataframe_split": {"columns": IRIS_FEATURES[::-1],
                                                      "data": ROWS[IRIS_FEATURES[::-1]].values.tolist()}},
    "dataframe_records": {"dataframe_records": ROWS.to_dict(orient="records")},
    "instances": {"instances": ROWS.to_dict(orient="records")},
    "inputs_columns": {"inputs": {name: ROWS[name].tolist() for name in IRIS_FEATURES}},
    "inputs_records": {"inputs": ROWS.to_dict(orient="records")},
    "integers": {"dataframe_records": [{"sepal_length": 5, "sepal_width": 3, "petal_length": 5, "petal_width": 2}]},
}


@pytest.fixture(scope="module")
def mlflow_serve(iris: Served, mlflow_server: LocalMlflow) -> Iterator[str]:
    """`mlflow models serve` on the very model the session wrapper serves."""
    port = free_port()
    # mlflow models serve starts `uvicorn` by name: the venv's bin must be on PATH.
    env = {**os.environ, **mlflow_server.client_env(),
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", iris.model.source, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 120, process)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        stop_process(process)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_every_scoring_format_answers_as_mlflow_models_serve(iris: Served, mlflow_serve: str, name: str) -> None:
    ours = iris.post("invocations", BODIES[name])
    theirs = httpx.post(mlflow_serve, json=BODIES[name], timeout=30)

    assert ours.status_code == theirs.status_code == 200
    assert ours.json() == theirs.json()


def test_csv_bodies_answer_as_mlflow_models_serve(iris: Served, mlflow_serve: str) -> None:
    csv = ROWS.to_csv(index=False).encode()
    headers = {"content-type": "text/csv"}

    ours = iris.post("invocations", content=csv, headers=headers)
    theirs = httpx.post(mlflow_serve, content=csv, headers=headers, timeout=30)

    assert ours.status_code == theirs.status_code == 200
    assert ours.json() == theirs.json()


@pytest.mark.parametrize("name", ["dataframe_split", "dataframe_records", "instances", "inputs_columns"])
def test_invocations_equal_pyfunc_predictions(iris: Served, pyfunc_iris: Any, name: str) -> None:
    answer = iris.post("invocations", BODIES[name])

    assert answer.json() == {"predictions": pyfunc_iris.predict(ROWS).tolist()}


def test_predict_and_invocations_agree(iris: Served) -> None:
    instances = ROWS.to_dict(orient="records")

    assert iris.post("predict", {"instances": instances}).json()["predictions"] == \
        iris.post("invocations", {"instances": instances}).json()["predictions"]
