"""The Open Inference Protocol suite's servers: each model logged once, served by a wrapper process
and by one real MLServer (with `mlserver-mlflow`, from its own virtualenv) that serves them all.

MLServer names each model by the wrapper's slug and serves the very files the registry holds
(downloaded once), so the same request path and body go to both.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow, free_port, stop_process
from tests.wrapper.conformance import Waiting, log_echo, log_frames32, wait_until_ready
from tests.wrapper.conftest import WrapperProcess, model_env, unique
from tests.wrapper.models import log_iris_model
from tests.wrapper.oip_peers import peer_python

TYPED = pd.DataFrame({"flag": [True, False], "name": ["alpha", "beta"], "n": np.array([3, 4], np.int64)})
# mlserver-mlflow needs a signature's outputs too (its metadata is built from them).
MODELS = {
    "iris": lambda name: log_iris_model(name),
    "frames32": log_frames32,
    "typed": lambda name: log_echo(name, ModelSignature(
        inputs=Schema([ColSpec("boolean", "flag"), ColSpec("string", "name"), ColSpec("long", "n")]),
        outputs=Schema([ColSpec("string")])), TYPED),
    "one_tensor": lambda name: log_echo(name, ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3), "x")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))])),
        {"x": np.array([[1, 2, 3], [4, 5, 6]], np.float32)}),
    "tensors": lambda name: log_echo(name, ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 2), "a"), TensorSpec(np.dtype(np.int64), (-1,), "b")]),
        outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))])),
        {"a": np.array([[0.5, 1.5], [2.0, 3.0]]), "b": np.array([1, 2])}),
    # Fails on demand (params `mode`), as a model with a bug or an unreachable dependency does.
    "params": lambda name: log_echo(name, ModelSignature(
        inputs=Schema([ColSpec("double", "x")]), outputs=Schema([ColSpec("double")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("mode", "string", "ok")])),
        pd.DataFrame({"x": [1.0, 2.5]})),
}


@dataclass(frozen=True)
class Served:
    model: LoggedModel
    slug: str
    wrapper: WrapperProcess


@dataclass
class Peers:
    """Every model, its wrapper, and the MLServer that serves them all."""

    models: dict[str, Served]
    mlserver_port: int
    mlserver: subprocess.Popen[bytes]
    log_path: Path

    @property
    def mlserver_root(self) -> str:
        return f"http://127.0.0.1:{self.mlserver_port}"

    def stop(self) -> None:
        for served in self.models.values():
            served.wrapper.stop()
        stop_process(self.mlserver)


def start_peers(mlflow_server: LocalMlflow, workdir: Path) -> Peers:
    """Log the models, start a wrapper for each and one MLServer for all, wait until all are ready."""
    from model_wrapper.contract.naming import model_slug

    python = peer_python("mlserver")
    logged = {kind: log(unique(f"oip-{kind}")) for kind, log in MODELS.items()}
    models = {kind: Served(model, model_slug(model.name), WrapperProcess(model_env(model, mlflow_server)).start())
              for kind, model in logged.items()}
    folder = workdir / "mlserver"
    port = free_port()
    _mlserver_settings(folder, port, models)
    log_path = workdir / "mlserver.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(python.parent / "mlserver"), "start", str(folder)], cwd=folder, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    peers = Peers(models, port, process, log_path)
    try:
        _wait(peers)
    except BaseException:
        peers.stop()
        raise
    return peers


def _mlserver_settings(folder: Path, port: int, models: dict[str, Served]) -> None:
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
        "host": "127.0.0.1", "debug": False}))
    for served in models.values():
        files = Path(mlflow.artifacts.download_artifacts(served.model.source, dst_path=str(folder / served.slug)))
        (folder / served.slug / "model-settings.json").write_text(json.dumps({
            "name": served.slug, "implementation": "mlserver_mlflow.MLflowRuntime",
            "parameters": {"uri": str(files), "version": served.model.version}}))


def _wait(peers: Peers) -> None:
    def logs() -> str:
        return _logs(peers)

    waiting: Waiting = {kind: (served.wrapper.base(served.slug) + "ready", served.wrapper.process, logs)
                        for kind, served in peers.models.items()}
    waiting |= {f"mlserver {kind}": (f"{peers.mlserver_root}/v2/models/{served.slug}/ready", peers.mlserver, logs)
                for kind, served in peers.models.items()}
    wait_until_ready(waiting)


def _logs(peers: Peers) -> str:
    text = peers.log_path.read_text(errors="replace")[-3000:] if peers.log_path.exists() else ""
    return text + "\n".join(served.wrapper.log()[-1500:] for served in peers.models.values())
