"""The conformance suite's peers: each model logged once, served at the same time by a real
`mlflow models serve --env-manager local` and by a wrapper process, all started in parallel.

The models cover what MLflow can log and the wrapper used to refuse or fail on: float32 and int32
frames, bool/binary/datetime/string columns with an optional one, one named tensor, several named
tensors, tensors that cannot be fields (an image, a string tensor, named tensors of differing
shapes with two variable dimensions), a custom pyfunc with params that raises on demand, and a
LightGBM classifier.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lightgbm
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from sklearn.linear_model import LinearRegression

from devstack.models import IRIS_CONTRACT, LoggedModel, _latest_version, iris_frame
from devstack.servers import LocalMlflow, free_port, stop_process
from tests.wrapper.conftest import START_TIMEOUT, WrapperProcess, model_env, unique
from tests.wrapper.models import log_model

ECHO_MODEL = Path(__file__).with_name("conformance_model.py")
TYPED_FRAME = pd.DataFrame({
    "flag": [True, False],
    "blob": [b"\x00\x01binary", b"\xffmore"],
    "when": pd.to_datetime(["2024-05-01 12:00:00", "2021-01-01 00:00:00"]),
    "name": ["alpha", "beta"],
    "opt": [1.5, 2.5],
})
LABELLED_IRIS = IRIS_CONTRACT
# Two 28x28 images whose values float32 holds exactly.
IMAGES = (np.arange(2 * 28 * 28, dtype=np.float32) / 8).reshape(2, 28, 28)


@dataclass(frozen=True)
class Pair:
    """One model served by both: `mlflow models serve` (the reference) and the wrapper."""

    name: str
    model: LoggedModel
    wrapper: WrapperProcess
    slug: str
    mlflow_port: int
    mlflow_process: subprocess.Popen[bytes]

    @property
    def mlflow_root(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def wrapper_root(self) -> str:
        return f"http://127.0.0.1:{self.wrapper.port}"

    @property
    def api(self) -> str:
        return self.wrapper.base(self.slug)


def log_echo(name: str, signature: ModelSignature, example: Any) -> LoggedModel:
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=str(ECHO_MODEL), signature=signature,
                                       input_example=example, pip_requirements=["numpy", "pandas"])
    return _register(info, name, run.info.run_id)


def log_lightgbm(name: str) -> LoggedModel:
    features, target = iris_frame()
    model = lightgbm.LGBMClassifier(n_estimators=15, num_leaves=7, min_child_samples=5, verbose=-1)
    model.fit(features, target)
    with mlflow.start_run() as run:
        info = mlflow.lightgbm.log_model(model, name="model", input_example=features.iloc[:2],
                                         pip_requirements=[f"lightgbm=={lightgbm.__version__}"])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "contract.yaml").write_text(LABELLED_IRIS)
        MlflowClient().log_model_artifact(info.model_id, str(Path(tmp) / "contract.yaml"))
    return _register(info, name, run.info.run_id, model)


def log_frames32(name: str) -> LoggedModel:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"f32": rng.normal(size=50).astype(np.float32),
                          "i32": rng.integers(0, 10, size=50).astype(np.int32)})
    model = LinearRegression().fit(frame, frame["f32"] * 2 + frame["i32"])
    return log_model(name, model, frame, contract=None)


def _register(info: Any, name: str, run_id: str, model: Any = None) -> LoggedModel:
    mlflow.register_model(info.model_uri, name)
    version = _latest_version(name, run_id)
    return LoggedModel(name, str(version.version), str(version.source), run_id, model)


MODELS: dict[str, Callable[[str], LoggedModel]] = {
    "frames32": log_frames32,
    "typed": lambda name: log_echo(name, ModelSignature(inputs=Schema([
        ColSpec("boolean", "flag"), ColSpec("binary", "blob"), ColSpec("datetime", "when"),
        ColSpec("string", "name"), ColSpec("double", "opt", required=False)])), TYPED_FRAME),
    "one_tensor": lambda name: log_echo(name, ModelSignature(inputs=Schema([
        TensorSpec(np.dtype(np.float32), (-1, 3), "x")])), {"x": np.array([[1, 2, 3], [4, 5, 6]], np.float32)}),
    "tensors": lambda name: log_echo(name, ModelSignature(inputs=Schema([
        TensorSpec(np.dtype(np.float32), (-1, 2), "a"), TensorSpec(np.dtype(np.int32), (-1,), "b")])),
        {"a": np.array([[0.5, 1.5], [2.0, 3.0]], np.float32), "b": np.array([1, 2], np.int32)}),
    # Tensors whose instances cannot be fields: served through invocations only.
    "image": lambda name: log_echo(name, ModelSignature(inputs=Schema([
        TensorSpec(np.dtype(np.float32), (-1, 28, 28), "img")])), {"img": IMAGES}),
    "strings": lambda name: log_echo(name, ModelSignature(inputs=Schema([TensorSpec(np.dtype(str), (-1,))])),
                                     np.array(["alpha", "beta"])),
    "uneven": lambda name: log_echo(name, ModelSignature(inputs=Schema([
        TensorSpec(np.dtype(np.float64), (-1, -1, 3), "a"), TensorSpec(np.dtype(np.int64), (-1,), "b")])),
        {"a": np.arange(12, dtype=np.float64).reshape(2, 2, 3), "b": np.array([1, 2])}),
    "params": lambda name: log_echo(name, ModelSignature(
        inputs=Schema([ColSpec("double", "x")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("mode", "string", "ok"),
                            ParamSpec("when", "datetime", np.datetime64("2023-07-01"))])),
        pd.DataFrame({"x": [1.0, 2.5]})),
    "lightgbm": log_lightgbm,
}


# Both servers of a pair run with the same hash seed (MLflow's messages list sets, whose order
# follows it) and the same interpreter path (its stack traces name files): nothing is normalised.
SAME_PROCESS_ENV = {"PYTHONHASHSEED": "20261202"}
# `mlflow models serve` starts the `uvicorn` script, whose interpreter is the virtualenv's real path.
PYTHON = str(Path(sys.prefix).resolve() / "bin" / Path(sys.executable).name)


def start_pairs(mlflow_server: LocalMlflow) -> dict[str, Pair]:
    """Log every model, start both servers for each at once, and wait until all are ready."""
    from model_wrapper.contract.naming import model_slug

    logged = {kind: log(unique(f"conform-{kind}")) for kind, log in MODELS.items()}
    ports = _distinct_ports(2 * len(logged))
    pairs = {}
    for kind, model in logged.items():
        wrapper = WrapperProcess({**model_env(model, mlflow_server), **SAME_PROCESS_ENV}, port=ports.pop(),
                                 python=PYTHON).start()
        port = ports.pop()
        pairs[kind] = Pair(kind, model, wrapper, model_slug(model.name), port,
                           _mlflow_serve(model, mlflow_server, port, wrapper.workdir / "mlflow-serve.log"))
    try:
        _wait_all(pairs.values())
    except BaseException:
        stop_pairs(pairs)
        raise
    return pairs


def _distinct_ports(count: int) -> list[int]:
    # free_port() releases its port at once, so twelve calls in a row can repeat one.
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def stop_pairs(pairs: dict[str, Pair]) -> None:
    for pair in pairs.values():
        pair.wrapper.stop()
        stop_process(pair.mlflow_process)


def _mlflow_serve(model: LoggedModel, mlflow_server: LocalMlflow, port: int, log_path: Path, *,
                  python: str | Path = PYTHON, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # mlflow models serve starts `uvicorn` by name: the venv's bin must be on PATH.
    environment = {**os.environ, **mlflow_server.client_env(), **SAME_PROCESS_ENV, **(env or {}),
                   "PATH": f"{os.path.dirname(python)}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(python), "-m", "mlflow", "models", "serve", "-m", model.source, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_all(pairs: Iterator[Pair] | Any) -> None:
    waiting: Waiting = {}
    for pair in pairs:
        waiting[f"{pair.name} wrapper"] = (pair.api + "ready", pair.wrapper.process, _tail(pair.wrapper.log_path))
        waiting[f"{pair.name} mlflow"] = (pair.mlflow_root + "/ping", pair.mlflow_process,
                                          _tail(pair.wrapper.workdir / "mlflow-serve.log"))
    wait_until_ready(waiting)


def _tail(log_path: Path) -> Callable[[], str]:
    return lambda: log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""


Waiting = dict[str, tuple[str, "subprocess.Popen[bytes] | None", Callable[[], str]]]
"""Name → (the URL that answers 200 once it is ready, its process, what to show if it never is)."""


def wait_until_ready(waiting: Waiting) -> None:
    """Poll every URL until each answers 200; fail with the process's log if it exits or time runs out."""
    waiting = dict(waiting)
    deadline = time.monotonic() + START_TIMEOUT * 2
    while waiting and time.monotonic() < deadline:
        for name, (url, process, log) in list(waiting.items()):
            assert process is not None
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        del waiting[name]
            except OSError:
                pass
        time.sleep(0.2)
    assert not waiting, f"not ready in time: {sorted(waiting)}\n" + "\n".join(log() for _, _, log in waiting.values())


def post_both(pair: Pair, body: bytes, content_type: str | None,
              client: httpx.Client) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
    """The same request to mlflow models serve, to the wrapper's API route and to its root route."""
    headers = {"content-type": content_type} if content_type is not None else {}
    theirs = client.post(pair.mlflow_root + "/invocations", content=body, headers=headers)
    ours = client.post(pair.api + "invocations", content=body, headers=headers)
    root = client.post(pair.wrapper_root + "/invocations", content=body, headers=headers)
    return theirs, ours, root
