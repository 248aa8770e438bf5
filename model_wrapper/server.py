"""The wrapper process: settings, logging, then uvicorn, with the model loading beside it.

`main()` is what `python -m model_wrapper` (and the image's CMD) runs. With one worker HTTP starts
at once so liveness answers; the model loads in a background thread and `ready` turns 200 when its
examples have been predicted. With WORKERS > 1 each worker loads before it accepts connections. A
fatal loading problem is written to TERMINATION_LOG (Kubernetes shows it in the pod status) and to
stderr, and the process exits with a code that says whose it is: the version's (EXIT_LOAD_FAILED) or its
sources' (EXIT_SOURCES_UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from model_wrapper.config.logs import configure_logging
from model_wrapper.config.settings import SettingsError, WrapperSettings, load_settings
from model_wrapper.contract.redaction import redact
from model_wrapper.errors import LoadFailure
from model_wrapper.http.app import create_app
from model_wrapper.http.metrics import MULTIPROCESS_DIR
from model_wrapper.http.shadow import close_sessions
from model_wrapper.loading.outage import outside_the_version
from model_wrapper.predict.inference_log import InferenceLog
from model_wrapper.predict.predictor import Predictor

log = logging.getLogger(__name__)
EXIT_BAD_SETTINGS = 2
EXIT_LOAD_FAILED = 65
"""sysexits' EX_DATAERR: the version itself cannot serve (its files, contract, environment or examples); the
reason is in the termination message. A code no Python process exits with by itself (an uncaught error is 1), so
the watcher can tell the wrapper's verdict on the version from an image that cannot start."""
EXIT_SOURCES_UNAVAILABLE = 69
"""sysexits' EX_UNAVAILABLE: S3 or MLflow were unreachable or refused the wrapper, so the reason lies outside
the version; the watcher (watcher.decide.rollout) leaves the version uncharged and the kubelet retries."""
# uvicorn's supervisor stops every worker, and itself, when one exits with this code.
_UVICORN_STARTUP_FAILURE = 3
# Set by the parent for its workers: where a worker leaves the reason it could not load.
_FATAL_FILE = "MODEL_WRAPPER_FATAL_FILE"
TERMINATION_LOG_LIMIT = 4096


def main() -> int:
    # Start-up creates hundreds of thousands of long-lived objects (MLflow, scikit-learn, the
    # model): collecting cycles among them is wasted work. load_into freezes them and re-enables.
    gc.disable()
    try:
        settings = load_settings()
    except SettingsError as e:
        report_fatal(str(e), Path(os.environ.get("TERMINATION_LOG", "/dev/termination-log")), [])
        return EXIT_BAD_SETTINGS
    configure_logging(settings)
    return serve_workers(settings) if settings.workers > 1 else serve(settings)


def serve(settings: WrapperSettings) -> int:
    """One process: uvicorn in the main thread, the model loading in another."""
    predictor = Predictor(settings.model_name, settings.model_version, settings.max_batch)
    inference_log = _inference_log(settings)
    server = DrainingServer(_config(create_app(settings, predictor, inference_log), settings),
                            after_shutdown=lambda: inference_log.close(settings.inference_log_flush_seconds),
                            drain_seconds=settings.drain_seconds, on_sigterm=[predictor_draining(predictor)])
    failures: list[int] = []

    def stop(reason: str, code: int) -> None:
        failures.append(code)
        server.should_exit = True

    _exit_on_stop_signals()
    try:
        with tempfile.TemporaryDirectory(prefix="model-wrapper-") as workdir:
            start_loading(settings, predictor, Path(workdir), stop, inference_log)
            server.run()
    except SystemExit as e:  # SIGTERM or SIGINT, after uvicorn's graceful shutdown and the folder's removal
        return int(e.code or 0)
    return failures[0] if failures else 0


def _exit_on_stop_signals() -> None:
    """uvicorn re-raises the SIGTERM or SIGINT it shut down for once it is done; by default that kills the
    process on the spot, before the model's temporary folder is removed. Raised as SystemExit instead, it
    unwinds through the cleanup, and the exit code is still the signal's (128 + number)."""
    def leave(number: int, frame: object) -> None:
        raise SystemExit(128 + number)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, leave)


class _Server(uvicorn.Server):
    """uvicorn's server, running `after_shutdown` once every accepted request has been answered: after a
    SIGTERM uvicorn re-raises the signal as `run` ends, so code after `run` would never run."""

    def __init__(self, config: uvicorn.Config, after_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._after_shutdown = after_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        await close_sessions()  # a shadow's mirroring client, if one was opened
        await asyncio.to_thread(self._after_shutdown)


def _inference_log(settings: WrapperSettings) -> InferenceLog:
    return InferenceLog(settings, writer=[sys.executable, "-m", "model_wrapper", "log-writer"])


def serve_workers(settings: WrapperSettings) -> int:
    """Several processes (uvicorn's supervisor); each worker loads its own model, then serves."""
    with tempfile.NamedTemporaryFile(prefix="model-wrapper-fatal-", delete=False) as marker:
        os.environ[_FATAL_FILE] = marker.name
    # Read by prometheus-client when a worker imports it: the workers then count into shared files
    # and /metrics reports the pod's totals. A fresh directory each start: old files would add up.
    metrics_dir = tempfile.mkdtemp(prefix="model-wrapper-metrics-")
    os.environ[MULTIPROCESS_DIR] = metrics_dir
    atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    try:
        uvicorn.run("model_wrapper.server:worker_app", factory=True, workers=settings.workers,
                    host=settings.host, port=settings.port, log_config=None, access_log=settings.access_log,
                    server_header=False, ws="none")
        code = Path(marker.name).read_text()
        return int(code) if code else 0
    finally:
        Path(marker.name).unlink(missing_ok=True)


def worker_app() -> Any:
    """The app of one worker process (uvicorn calls this factory in each worker)."""
    gc.disable()  # as in main(): load_into re-enables it
    settings = load_settings()
    configure_logging(settings)
    predictor = Predictor(settings.model_name, settings.model_version, settings.max_batch)
    inference_log = _inference_log(settings)
    # A worker's server returns on the SIGTERM its supervisor sends, and the process then exits normally.
    atexit.register(inference_log.close, settings.inference_log_flush_seconds)

    def stop(reason: str, code: int) -> None:
        Path(os.environ[_FATAL_FILE]).write_text(str(code))
        logging.shutdown()
        os._exit(_UVICORN_STARTUP_FAILURE)

    workdir = tempfile.mkdtemp(prefix="model-wrapper-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    # Workers share one listening socket: a worker that accepted connections while still loading
    # would answer them 503 while a sibling is ready. So each loads first and only then serves.
    app = create_app(settings, predictor, inference_log)
    load_into(settings, predictor, Path(workdir), stop, inference_log)
    return app


def start_loading(settings: WrapperSettings, predictor: Predictor, workdir: Path,
                  on_fatal: Callable[[str, int], None], inference_log: InferenceLog | None = None) -> None:
    thread = threading.Thread(target=load_into, args=(settings, predictor, workdir, on_fatal, inference_log),
                              name="model-loader", daemon=True)
    thread.start()


def load_into(settings: WrapperSettings, predictor: Predictor, workdir: Path,
              on_fatal: Callable[[str, int], None], inference_log: InferenceLog | None = None) -> None:
    """Load, install and warm up the model; on failure report why and call `on_fatal` with the exit code."""
    failure: Exception
    try:
        _import_scipy_special()
        from model_wrapper.loading.sklearn_loader import load_fast  # scikit-learn models without importing MLflow

        if (fast := load_fast(settings, workdir)) is None:
            from model_wrapper.loading.mlflow_loader import (
                load_model,  # imports MLflow: seconds, so off the serving thread
            )

            predictor.install(load_model(settings, workdir))
        else:
            predictor.install(fast[0])
        predictor.warm_up()
        if inference_log is not None:
            inference_log.attach(predictor.installed())
        log.info("model %s version %s: ready on %s", settings.model_name, settings.model_version, settings.prefix)
        # Later collections skip everything loaded so far: steadier request latency. No collection
        # first: start-up leaves a few thousand garbage objects, not worth a quarter second.
        gc.freeze()
        gc.enable()
        if fast is not None:
            fast[1]()  # MLflow for invocations, now that predict serves
        return
    except LoadFailure as e:
        reason, failure = str(e), e
    except Exception as e:  # anything else is still a reason the researcher must see
        log.exception("model %s version %s: unexpected error while loading", settings.model_name,
                      settings.model_version)
        reason, failure = f"unexpected error while loading the model: {type(e).__name__}: {e}".splitlines()[0], e
    predictor.fail(reason)
    report_fatal(reason, settings.termination_log, settings.secrets())
    on_fatal(reason, EXIT_SOURCES_UNAVAILABLE if outside_the_version(failure) else EXIT_LOAD_FAILED)


def _import_scipy_special() -> None:
    """Import scipy.special before MLflow, when the image has it: half a second less cold start
    for scikit-learn models, about 0.1 s more for others.

    skops (MLflow's scikit-learn format) names each of scipy's ~800 ufuncs at import time by
    scanning sys.modules in order for it; with scipy.special loaded before MLflow's ~1,400 modules
    every scan ends early. The names found, and so skops' trusted types, are the same either way.
    """
    with contextlib.suppress(ImportError):
        import scipy.special  # noqa: F401


def report_fatal(reason: str, termination_log: Path, secrets: list[str]) -> None:
    """One line on stderr and in the termination log (when its directory is writable)."""
    line = redact(" ".join(reason.split()), secrets)
    print(f"model-wrapper: cannot serve: {line}", file=sys.stderr, flush=True)
    writable = os.access(termination_log, os.W_OK) if termination_log.exists() else (
        termination_log.parent.is_dir() and os.access(termination_log.parent, os.W_OK))
    if writable:
        try:
            termination_log.write_text(line[:TERMINATION_LOG_LIMIT] + "\n")
        except OSError as e:
            print(f"model-wrapper: could not write {termination_log}: {e}", file=sys.stderr, flush=True)


class DrainingServer(_Server):
    """uvicorn that, on SIGTERM, first runs `on_sigterm` (readiness turns 503), keeps serving for
    `drain_seconds` while the endpoint's removal spreads to kube-proxy and the Ingress controller
    (uvicorn alone closes its listener ~0.1 s after SIGTERM: requests routed meanwhile would be
    refused), then shuts down as uvicorn does. A second signal, SIGINT or a zero drain stop at once."""

    def __init__(self, config: uvicorn.Config, after_shutdown: Callable[[], None], drain_seconds: float,
                 on_sigterm: list[Callable[[], None]]) -> None:
        super().__init__(config, after_shutdown)
        self.drain_seconds, self.on_sigterm = drain_seconds, on_sigterm
        self._drain: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._drain is not None or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        log.info("SIGTERM: readiness fails now; serving %.0f s more before shutting down", self.drain_seconds)
        for hook in self.on_sigterm:  # a hook that fails must not cut the drain short
            try:
                hook()
            except Exception:
                log.exception("a SIGTERM hook failed; draining anyway")
        self._drain = threading.Timer(self.drain_seconds, super().handle_exit, args=(sig, frame))
        self._drain.daemon = True
        self._drain.start()


def predictor_draining(predictor: Predictor) -> Callable[[], None]:
    """The drain hook that fails readiness (predict goes on answering)."""
    def drain() -> None:
        predictor.draining = True
    return drain


def _config(app: Any, settings: WrapperSettings) -> uvicorn.Config:
    # No WebSocket endpoints: ws="none" also spares start-up the websockets import.
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                          access_log=settings.access_log, server_header=False, lifespan="off", ws="none")
