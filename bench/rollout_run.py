"""Benchmark record: one shadow and one canary rollout on the local target, as the watcher ran them, step by step.

    python -m bench.rollout_run [--seconds-per-step 15]

Starts moto S3 and a real MLflow server, serves the iris LogisticRegression (version 1) with the local target,
then registers a decision tree of the same data as version 2 with a shadow `rollout` section (promoted, in
the run recorded), and later, as version 3 with a canary one (steps 10% and 50%), a model fitted to shuffled
labels (rolled back on its agreement with live). Callers ask `predict` throughout, one after another, through
the local front (the model's one endpoint). A `python -m watcher run-once` pass every 3 seconds, each in a
fresh process as the CronJob's would be, steps the rollout; after each pass the candidate's `rollout_status`
and `rollout_summary` tags are printed as a Markdown table for BENCHMARKS.md, with the callers' answers.
Asserts nothing; the lifecycle itself is tested in `tests/rollout/`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstack.models import LoggedModel

MODEL = "rollout-bench-iris"
PASS_SECONDS = 3.0
GIVE_UP_SECONDS = 240.0
PRODUCTION = {"deploy": "production"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout_run")
    parser.add_argument("--seconds-per-step", type=int, default=15, help="the sections' analysis.interval")
    args = parser.parse_args(argv)
    lines = [f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average (1 min) {os.getloadavg()[0]:.1f}; "
             f"a pass every {PASS_SECONDS:.0f} s, each step at least {args.seconds_per_step} s."]
    with _stack():
        from mlflow import MlflowClient

        from devstack.models import IRIS_CONTRACT, log_iris

        log_iris(MODEL, tags=PRODUCTION)
        _watcher("run-once")
        endpoint = MlflowClient().get_model_version(MODEL, "1").tags["model_endpoint"]
        interval = args.seconds_per_step
        sections = {
            "shadow": f"  strategy: shadow\n  sample: 0.5\n  analysis: {{interval: {interval}, min_requests: 100, "
                      "max_error_rate: 0.01, max_p99_ms: 250, min_agreement: 0.9}\n",
            "canary": f"  strategy: canary\n  steps: [10, 50]\n  analysis: {{interval: {interval}, "
                      "min_requests: 20, max_error_rate: 0.01, max_p99_ms: 250, min_agreement: 0.9}\n",
        }
        with _callers(endpoint) as answers:
            for strategy, section in sections.items():
                contract = f"{IRIS_CONTRACT}rollout:\n{section}"
                if strategy == "shadow":
                    logged, what = log_iris(MODEL, kind="tree", contract=contract, tags=PRODUCTION), "a decision tree"
                else:
                    logged, what = _shuffled(contract), "a logistic regression fitted to shuffled labels"
                lines += ["", f"**{strategy}**: version {logged.version} ({what}) beside the live version.", "",
                          "| after | rollout_status | rollout_summary |", "|---:|---|---|"]
                lines += _steps(logged.version)
        lines += ["", f"Callers' answers over both rollouts: {dict(sorted(answers.items()))} (status: count)."]
    print("\n".join(lines))
    return 0


def _shuffled(contract: str) -> LoggedModel:
    """A candidate that answers, but learnt nothing: its agreement with live is about a third."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from devstack.models import iris_frame, log_sklearn_model

    features, target = iris_frame()
    model = LogisticRegression(max_iter=500).fit(features, np.random.default_rng(0).permutation(target))
    return log_sklearn_model(MODEL, model, features, contract=contract, tags=PRODUCTION)


def _steps(version: str) -> list[str]:
    """Passes until the candidate is promoted or rolled back; one table row per change of its tags."""
    from mlflow import MlflowClient

    rows, seen, started = [], None, time.monotonic()
    while time.monotonic() - started < GIVE_UP_SECONDS:
        _watcher("run-once")
        tags = MlflowClient().get_model_version(MODEL, version).tags
        status, summary = tags.get("rollout_status", "-"), tags.get("rollout_summary", "-")
        if (status, summary) != seen:
            seen = (status, summary)
            cell = summary.replace("|", "\\|")  # the summary's own separators, in a Markdown table
            rows.append(f"| {time.monotonic() - started:.0f} s | {status} | {cell} |")
        if status in ("promoted", "rolled back"):
            return rows
        time.sleep(PASS_SECONDS)
    return [*rows, f"| {GIVE_UP_SECONDS:.0f} s | (still running: gave up) | |"]


def _watcher(*command: str) -> None:
    """One watcher process, as the CronJob runs it; its log goes to stderr."""
    subprocess.run([sys.executable, "-m", "watcher", *command], check=True, stdout=sys.stderr)


@contextmanager
def _stack() -> Iterator[Path]:
    """MLflow and moto S3 on loopback, the local target's environment; everything stopped after."""
    from devstack.servers import LocalMlflow, LocalS3
    from devstack.up import stop_wrappers

    workdir = Path(tempfile.mkdtemp(prefix="service-builder-rollout-"))
    s3 = LocalS3().start()
    registry = LocalMlflow(s3, workdir=workdir / "mlflow").start()
    os.environ.update({**registry.client_env(), "DEPLOY_TARGET": "local", "SMOKE_TEST": "on",
                       "LOCAL_STATE_DIR": str(workdir / "state"), "SERVICE_BUILDER_HOST_NAME": "localhost",
                       "LOCAL_FRONT_PORT": "0", "MLFLOW_DISABLE_TELEMETRY": "true"})
    import mlflow

    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        yield workdir
    finally:
        stop_wrappers(workdir / "state")
        registry.cleanup()
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def _callers(endpoint: str) -> Iterator[Counter[int]]:
    """One caller after another asks `predict` for a random iris row; the answers' status codes, counted."""
    from devstack.models import iris_frame

    rows, answers, stop = iris_frame()[0].to_dict(orient="records"), Counter[int](), threading.Event()

    def call() -> None:
        while not stop.is_set():
            body = json.dumps({"instances": [random.choice(rows)]}).encode()
            request = urllib.request.Request(f"{endpoint}predict", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    answers[answer.status] += 1
            except urllib.error.HTTPError as e:
                answers[e.code] += 1
            except OSError:
                answers[0] += 1
            stop.wait(0.005)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        yield answers
    finally:
        stop.set()
        caller.join()


if __name__ == "__main__":
    raise SystemExit(main())
