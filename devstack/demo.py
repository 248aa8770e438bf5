"""`make demo`: the whole product on this machine, with nothing running beforehand.

Starts a local S3 (moto) and a real MLflow server, registers an example model with its
contract, tags it `deploy=production`, runs `python -m watcher run-once` with
DEPLOY_TARGET=local (the wrapper becomes a local process), prints the `model_endpoint`
tag read back from MLflow and a real prediction fetched from it, then cleans everything up and points
at `make up`, which keeps the same stack running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import urllib.request
import warnings
from pathlib import Path

import yaml

from devstack.servers import LocalMlflow, LocalS3

MODEL = "Iris Classifier"


def main() -> int:
    warnings.filterwarnings("ignore")  # MLflow's hints about inferred schemas are not for the demo's reader
    workdir = Path(tempfile.mkdtemp(prefix="service-builder-demo-"))
    s3 = LocalS3().start()
    registry = LocalMlflow(s3, workdir=workdir / "mlflow")
    started = False
    # SIGTERM (a closed terminal, a CI timeout) unwinds like Ctrl-C, through the clean-up below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        step(f"MLflow server at {registry.start().tracking_uri}, S3 (moto) at {s3.endpoint_url}")
        started = True
        os.environ.update({**registry.client_env(), "DEPLOY_TARGET": "local", "SMOKE_TEST": "on",
                           "LOCAL_STATE_DIR": str(workdir / "state"), "SERVICE_BUILDER_HOST_NAME": "localhost",
                           "LOCAL_FRONT_PORT": "0"})
        return run_demo()
    except KeyboardInterrupt:
        return 130
    finally:
        from devstack.up import stop_wrappers
        from watcher.entry.cli import main as watcher

        if started:
            watcher(["undeploy", MODEL, "--untag"])  # stops the wrapper process the demo started
        stop_wrappers(workdir / "state")  # and whatever an interrupted deploy left, the local front included
        registry.cleanup()
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        step("stopped the wrapper, MLflow and S3; nothing is left running")
        step("to keep MLflow (with its UI), S3 and the watcher running and try your own models: make up")


def run_demo() -> int:
    import mlflow
    from mlflow import MlflowClient

    from devstack.models import IRIS_CONTRACT, log_iris
    from watcher.entry.cli import main as watcher

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    logged = log_iris(MODEL)
    step(f"registered {MODEL!r} version {logged.version} with its contract.yaml")
    MlflowClient().set_model_version_tag(MODEL, logged.version, "deploy", "production")
    step("tagged it deploy=production; running: python -m watcher run-once  (DEPLOY_TARGET=local)")
    if watcher(["run-once"]) != 0:
        return 1
    tags = MlflowClient().get_model_version(MODEL, logged.version).tags
    step(f"tags on version {logged.version}: " + json.dumps({k: v for k, v in sorted(tags.items())}, indent=2))
    if tags.get("deployment_status") != "deployed":
        step(f"deployment failed: {tags.get('deployment_message')}")
        return 1
    endpoint = tags["model_endpoint"]
    examples = yaml.safe_load(IRIS_CONTRACT)["examples"]
    step(f"model_endpoint = {endpoint}")
    answer = post(f"{endpoint}predict", {"instances": examples})
    step(f"POST {endpoint}predict {json.dumps({'instances': examples})}\n  -> {json.dumps(answer)}")
    hold_for_a_look(endpoint)
    return 0


def hold_for_a_look(endpoint: str) -> None:
    """The demo tears everything down next: with a person at a terminal, wait until they have looked."""
    if sys.stdin.isatty():
        step(f"the Swagger UI is at {endpoint} now; open it in a browser")
        input("==> press Enter to stop the demo and clean up ")
    else:
        step("the demo cleans up now; to keep a Swagger UI like this one open, run: make up")


def post(url: str, body: dict[str, object]) -> object:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
