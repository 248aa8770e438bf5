"""Benchmark: the wrapper's Open Inference Protocol `infer` against its own `predict`, and against
MLServer's V2 endpoint (with `mlserver-mlflow`) serving the same MLflow model, in the same run.

    python -m bench.v2

Logs the iris LogisticRegression with its contract to a loopback MLflow server and moto S3 (as
`bench.wrapper` does), serves it with the wrapper (one worker) and with MLServer (`parallel_workers:
0`, MLServer's MLflow runtime loading the same model files), then takes turns under wrk at 1 and
100 rows per request: ROUNDS rounds, the median counts. MLServer runs from the test suite's
virtualenv for it (tests/wrapper/oip_peers.py, built once under ~/.cache/service-builder). The
figure is the ratio `infer / predict` (target: 0.9 or more) and `infer / MLServer infer`. Prints a
Markdown section for BENCHMARKS.md; asserts nothing.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow

from bench.wrapper import INSTANCE, ROUNDS, Load, Server, _all_running, _mlserver, _stack
from bench.wrapper import _loads as _rounds
from devstack.servers import free_port
from tests.wrapper.oip_peers import peer_python

PD = {"content_type": "pd"}


def predict(n: int) -> dict[str, Any]:
    return {"instances": [INSTANCE] * n}


def infer(n: int) -> dict[str, Any]:
    return {"parameters": PD, "inputs": [{"name": name, "datatype": "FP64", "shape": [n], "data": [value] * n}
                                         for name, value in INSTANCE.items()]}


def main() -> int:
    load_before = os.getloadavg()
    python = peer_python("mlserver")
    with _stack() as (mlflow_server, source, name, version, workdir):
        env = {**os.environ, **mlflow_server.client_env(),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        files = mlflow.artifacts.download_artifacts(source, dst_path=str(workdir / "files"))
        mlserver = _mlserver(str(python), workdir, infer, implementation="mlserver_mlflow.MLflowRuntime", uri=files,
                             name="MLServer (mlserver-mlflow)", label="V2 infer")
        servers = [_wrapper(source, name, version, workdir), mlserver]
        with _all_running(servers, env):
            loads = _loads(servers)
    print(_report(loads, load_before))
    return 0


def _wrapper(source: str, name: str, version: str, workdir: Path) -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}/{name}/api"
    return Server("wrapper", ["env", f"MODEL_NAME={name}", f"MODEL_VERSION={version}", f"MODEL_SOURCE={source}",
                              f"PORT={port}", "HOST=127.0.0.1", "WORKERS=1", "DRAIN_SECONDS=0",
                              f"TERMINATION_LOG={workdir / 'termination-log'}", sys.executable, "-m", "model_wrapper"],
                  f"{base}/ready", {"predict": (f"{base}/predict", predict),
                                    "V2 infer": (f"{base}/v2/models/{name}/infer", infer)})


def _loads(servers: list[Server]) -> dict[tuple[str, str, int], Load]:
    """bench.wrapper's interleaved rounds; the median round of each (server, endpoint, instances)."""
    return {key: sorted(runs, key=lambda load: load.rps)[len(runs) // 2] for key, runs in _rounds(servers).items()}


def _report(loads: dict[tuple[str, str, int], Load], load_before: tuple[float, float, float]) -> str:
    lines = [f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average (1 min) "
             f"{load_before[0]:.1f} before and {os.getloadavg()[0]:.1f} after; median of {ROUNDS} rounds.", "",
             "| server | endpoint | rows | req/s | p50 ms | p99 ms | non-2xx |", "|---|---|---:|---:|---:|---:|---:|"]
    for (name, path, size), load in sorted(loads.items(), key=lambda item: item[0][2]):
        lines.append(f"| {name} | {path} | {size} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | "
                     f"{load.errors} |")
    lines += ["", "| ratio | 1 row | 100 rows |", "|---|---:|---:|"]
    for label, (a, b) in {"wrapper V2 infer / wrapper predict": (("wrapper", "V2 infer"), ("wrapper", "predict")),
                          "wrapper V2 infer / MLServer V2 infer": (("wrapper", "V2 infer"),
                                                                   ("MLServer (mlserver-mlflow)", "V2 infer"))}.items():
        ratios = [f"{loads[(*a, s)].rps / loads[(*b, s)].rps:.2f}x" for s in (1, 100)]
        lines.append(f"| {label} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
