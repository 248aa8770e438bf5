"""`make up`: a local MLflow (with its UI), S3 and the watcher, kept running until Ctrl-C, to try one's own models.

The watcher runs `serve-webhooks` on the local target: the MLflow server posts tag and alias events to
it (seconds from tag to endpoint) and it polls as well. Prints the UI's URL, the environment to export
so `mlflow.log_model` lands here, and how to stop; on Ctrl-C (or SIGTERM) it stops every wrapper it
started, the watcher, MLflow and S3, and removes its files. Each run starts with an empty registry.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from devstack.servers import LOCAL_AWS_ENV, WEBHOOK_SERVER_ENV, LocalMlflow, LocalS3, free_port

DEFAULT_PORTS = {"MLFLOW_PORT": 5000, "S3_PORT": 9000, "WEBHOOK_PORT": 8081, "LOCAL_FRONT_PORT": 8090}
"""The usual ports, when free (else any free one); each can be set by the variable of that name."""
WEBHOOK_SECRET = "make-up-local-webhook-secret"  # loopback only, thrown away with the stack
POLL_SECONDS = "30"


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="service-builder-up-"))
    ports = {name: int(os.environ.get(name) or port_or_free(port)) for name, port in DEFAULT_PORTS.items()}
    s3 = LocalS3(port=ports["S3_PORT"]).start()
    registry = LocalMlflow(s3, port=ports["MLFLOW_PORT"], workdir=workdir / "mlflow", extra_env=WEBHOOK_SERVER_ENV)
    # SIGTERM ends the stack as Ctrl-C does (a test, or a terminal closing, sends it).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        registry.start()
        os.environ.update({**registry.client_env(), "DEPLOY_TARGET": "local", "SMOKE_TEST": "on",
                           "LOCAL_STATE_DIR": str(workdir / "state"), "SERVICE_BUILDER_HOST_NAME": "localhost",
                           "WEBHOOK_SECRET": WEBHOOK_SECRET, "WEBHOOK_PORT": str(ports["WEBHOOK_PORT"]),
                           "LISTEN_ADDRESS": "127.0.0.1", "POLL_INTERVAL_SECONDS": POLL_SECONDS,
                           "LOCAL_FRONT_PORT": str(ports["LOCAL_FRONT_PORT"])})
        from watcher.entry.cli import main as watcher

        if watcher(["register-webhook", f"http://127.0.0.1:{ports['WEBHOOK_PORT']}"]) != 0:
            return 1
        announce(registry, workdir, ports["LOCAL_FRONT_PORT"])
        return watcher(["serve-webhooks"])
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop_wrappers(workdir / "state")
        registry.cleanup()
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        step("stopped the wrappers, the watcher, MLflow and S3; nothing is left running")


def announce(registry: LocalMlflow, workdir: Path, front_port: int) -> None:
    exports = {key: value for key, value in registry.client_env().items()
               if key in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL") or key in LOCAL_AWS_ENV}
    step(f"MLflow UI: {registry.tracking_uri}   (S3: {registry.s3.endpoint_url}; files in {workdir})")
    step("to log your own models here, in another shell:\n    export "
         + " ".join(f"{key}={value}" for key, value in exports.items()))
    step("log a model (with a contract.yaml, or a signature and input example), register it, and tag a version "
         "deploy=production in the UI: within seconds it gets deployment_status and model_endpoint tags; every model "
         f"is served at http://127.0.0.1:{front_port}/<model-slug>/api/, the same address for each new version")
    step(f"python -m watcher status (with those variables and DEPLOY_TARGET=local "
         f"LOCAL_STATE_DIR={workdir / 'state'}) lists what runs")
    step("stop with Ctrl-C: it stops every model it started, the watcher, MLflow and S3")


def stop_wrappers(state_dir: Path) -> None:
    """Stop every wrapper process the local target recorded, and its front (the registry that selected them
    goes too)."""
    if not state_dir.is_dir():
        return
    from watcher.config.settings import load_settings
    from watcher.targets.local import LocalTarget

    LocalTarget(load_settings(deploy_target="local", local_state_dir=state_dir)).shutdown()


def port_or_free(port: int) -> int:
    """The usual port when nothing listens there, else any free one (the URLs printed say which)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
