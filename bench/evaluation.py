"""Benchmark: what the evaluation gate costs for 10,000 and 1,000,000 rows of test data.

    python -m bench.evaluation [--rows 10000,1000000]

For each size, an iris classifier is logged (to a real `mlflow server`, moto S3) with a contract
whose `evaluation` section reads `evaluation.csv` of that many rows (iris rows, resampled). Measured:

- evaluation time: wall time of `python -m model_wrapper evaluate` (model download and load included),
  and its peak resident memory: `VmHWM` of the process, read from /proc while it runs (`ru_maxrss` of
  a child counts the parent's size at fork, which here holds the million-row table);
- the time added to a deploy: a `run-once` pass on the local target deploying the version with the
  gate, against the same model logged without it, each on its own state directory.

Only loopback is contacted; every process started is stopped. Prints a Markdown section for
BENCHMARKS.md. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

import mlflow
import numpy as np

from devstack.models import IRIS_CONTRACT, LoggedModel, iris_frame, log_sklearn_model, train_iris
from devstack.servers import LocalMlflow, LocalS3
from watcher.config.settings import load_settings
from watcher.entry.cli import build_deps
from watcher.reconcile.engine import reconcile_once

GATE = "evaluation:\n  data: evaluation.csv\n  target: species\n  metrics:\n    accuracy: {min: 0.9}\n" \
       "    f1_macro: {min: 0.85}\n    roc_auc: {min: 0.9}\n"
LABELS = ["setosa", "versicolor", "virginica"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,1000000", help="comma-separated data sizes")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.rows.split(",")]
    s3 = LocalS3().start()
    server = LocalMlflow(s3).start()
    os.environ.update(server.client_env())
    mlflow.set_tracking_uri(server.tracking_uri)
    rows = []
    try:
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is the Markdown
            plain = log_sklearn_model("bench-eval-plain", train_iris(), iris_frame()[0],
                                      pip_requirements=["scikit-learn"])
            baseline = _deploy_seconds(server, plain)
            for size in sizes:
                gated = log_sklearn_model(f"bench-eval-{size}", train_iris(), iris_frame()[0],
                                          contract=IRIS_CONTRACT + GATE, files={"evaluation.csv": _csv(size)},
                                          pip_requirements=["scikit-learn"])
                seconds, peak_mib, result = _evaluate(server, gated)
                deploy = _deploy_seconds(server, gated)
                rows.append((size, seconds, peak_mib, deploy, baseline, result))
                print(f"{size} rows: {seconds:.1f}s, {peak_mib:.0f} MiB, deploy {deploy:.1f}s "
                      f"(without gate {baseline:.1f}s)", file=sys.stderr)
    finally:
        server.cleanup()
        s3.stop()
    print(_markdown(rows))
    return 0


def _csv(rows: int) -> bytes:
    features, target = iris_frame()
    rng = np.random.default_rng(0)
    picked = rng.integers(0, len(features), rows)
    table = features.iloc[picked].reset_index(drop=True)
    table = table + rng.normal(0, 0.05, table.shape).round(2)
    return table.round(2).assign(species=[LABELS[t] for t in target[picked]]).to_csv(index=False).encode()


def _evaluate(server: LocalMlflow, logged: LoggedModel) -> tuple[float, float, dict[str, Any]]:
    env = {**os.environ, **server.client_env(), "MODEL_NAME": logged.name, "MODEL_VERSION": logged.version,
           "MODEL_SOURCE": logged.source, "MODEL_RUN_ID": logged.run_id, "TERMINATION_LOG": os.devnull}
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "model_wrapper", "evaluate"], env=env, stdout=out,
                                   stderr=subprocess.DEVNULL)
        peak_kib = 0
        while process.poll() is None:
            peak_kib = max(peak_kib, _high_water_kib(process.pid))
            time.sleep(0.05)
        seconds = time.monotonic() - started
        out.seek(0)
        result = json.loads(out.read().decode().strip().splitlines()[-1])
    return seconds, peak_kib / 1024, result


def _high_water_kib(pid: int) -> int:
    """The process's peak resident set so far (VmHWM), 0 once it has gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _deploy_seconds(server: LocalMlflow, logged: LoggedModel) -> float:
    """Wall time of one local-target pass that deploys `logged` (gate included when its contract has one)."""
    client = mlflow.MlflowClient()
    tag = f"bench-{logged.name}-{time.monotonic_ns()}"
    client.set_model_version_tag(logged.name, logged.version, "deploy", tag)
    with tempfile.TemporaryDirectory() as state:
        settings = load_settings(mlflow_tracking_uri=server.tracking_uri, mlflow_s3_endpoint_url=server.s3.endpoint_url,
                                 aws_access_key_id="devstack-key", aws_secret_access_key="devstack-secret",
                                 deploy_target="local", local_state_dir=Path(state), selector=f"tag:deploy={tag}",
                                 rollout_timeout_seconds=300, smoke_test="off")
        started = time.monotonic()
        report = reconcile_once(build_deps(settings), out=lambda line: None)
        seconds = time.monotonic() - started
        for path in Path(state).glob("*.json"):
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError):
                os.killpg(json.loads(path.read_text())["pid"], signal.SIGKILL)
    if report.deployed != 1:
        raise RuntimeError(f"the deploy failed: {report.failures}")
    return seconds


def _markdown(rows: list[tuple[int, float, float, float, float, dict[str, Any]]]) -> str:
    cores = os.cpu_count()
    lines = [f"## Evaluation gate ({datetime.now(UTC):%Y-%m-%d}, `python -m bench.evaluation`)", "",
             f"Machine: {platform.machine()}, {cores} cores (shared), Python {platform.python_version()}; "
             f"load average at the end {os.getloadavg()[0]:.1f}. An iris LogisticRegression, metrics accuracy, "
             "f1_macro and roc_auc; the data read 10,000 rows at a time.", "",
             "| rows | evaluation (s) | peak memory (MiB) | deploy with the gate (s) | deploy without (s) | "
             "added to a deploy (s) | figures |", "|---|---|---|---|---|---|---|"]
    for size, seconds, peak, deploy, baseline, result in rows:
        figures = " ".join(f"{k}={v:.3f}" for k, v in (result.get("metrics") or {}).items())
        lines.append(f"| {size:,} | {seconds:.1f} | {peak:.0f} | {deploy:.1f} | {baseline:.1f} | "
                     f"{deploy - baseline:+.1f} | {figures} |")
    if len(rows) >= 2:
        (small, _, low, *_), (big, _, high, *_) = rows[0], rows[-1]
        lines += ["", f"Peak memory for {big:,} rows is {high / low:.2f}x that for {small:,} rows "
                      f"({big // small}x the data)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
