"""Benchmark: the model wrapper against `mlflow models serve --env-manager local`, same model, same run.

    python -m bench.wrapper            (or `make bench`)

Starts moto S3 and an MLflow server on loopback, logs the iris LogisticRegression with its
contract, then, one server at a time, both serving that model version (one worker each):

- cold start: process start until ready (the wrapper's /ready, mlflow's /ping), median of 5,
  the two servers alternating;
- load: wrk (Debian's) with a Lua POST script, 1 thread, 8 connections, 10 s, after a 2 s warm-up;
  req/s, p50 and p99 for one instance per request and for a 100-instance batch. The wrapper's
  predict and mlflow's invocations alternate for 3 rounds and the median round of each counts, so
  that other work on the machine weighs on both alike. The wrapper's invocations (MLflow's own
  parsing, for compatibility) is measured once, for reference.

Only loopback is ever contacted; every process it starts is stopped. Prints a Markdown section
for BENCHMARKS.md. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from devstack.servers import LocalMlflow, LocalS3, free_port, stop_process

DURATION, WARM_UP, CONNECTIONS, COLD_TRIALS, ROUNDS = 10, 2, 8, 5, 3
INSTANCE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    ready_url: str


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with _stack() as (mlflow_server, source, name, version):
        env = {**os.environ, **mlflow_server.client_env(),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        wrapper, mlflow_serve = _servers(source, name, version)
        cold = _cold_starts([wrapper, mlflow_serve], env)
        with _running(wrapper, env), _running(mlflow_serve, env):
            loads = _loads(wrapper, mlflow_serve)
    print(_report(cold, loads))
    return 0


@contextmanager
def _stack() -> Iterator[tuple[LocalMlflow, str, str, str]]:
    s3 = LocalS3().start()
    mlflow_server = LocalMlflow(s3).start()
    try:
        os.environ.update(mlflow_server.client_env())
        import mlflow

        from devstack.models import log_iris

        mlflow.set_tracking_uri(mlflow_server.tracking_uri)
        with redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is the report
            model = log_iris("bench-iris")
        yield mlflow_server, model.source, model.name, model.version
    finally:
        mlflow_server.cleanup()
        s3.stop()


def _servers(source: str, name: str, version: str) -> tuple[Server, Server]:
    port = free_port()
    termination = Path(tempfile.mkdtemp(prefix="bench-wrapper-")) / "termination-log"
    wrapper = Server("wrapper", ["env", f"MODEL_NAME={name}", f"MODEL_VERSION={version}", f"MODEL_SOURCE={source}",
                                 f"PORT={port}", "HOST=127.0.0.1", "WORKERS=1", f"TERMINATION_LOG={termination}",
                                 sys.executable, "-m", "model_wrapper"],
                     f"http://127.0.0.1:{port}/{name}/api/ready")
    port = free_port()
    mlflow_serve = Server("mlflow models serve", [sys.executable, "-m", "mlflow", "models", "serve", "-m", source,
                                                  "--env-manager", "local", "--workers", "1", "--host", "127.0.0.1",
                                                  "--port", str(port)],
                          f"http://127.0.0.1:{port}/ping")
    return wrapper, mlflow_serve


def _loads(wrapper: Server, mlflow_serve: Server) -> dict[tuple[str, str, int], Load]:
    """Both servers are up (the idle one costs nothing); they take turns under the same load."""
    loads: dict[tuple[str, str, int], Load] = {}
    for batch in ([INSTANCE], [INSTANCE] * 100):
        rounds: dict[tuple[str, str, int], list[Load]] = {}
        for _ in range(ROUNDS):
            for server, path in ((wrapper, "predict"), (mlflow_serve, "invocations")):
                rounds.setdefault((server.name, path, len(batch)), []).append(_under_load(server, path, batch))
        loads |= {key: sorted(runs, key=lambda load: load.rps)[len(runs) // 2] for key, runs in rounds.items()}
        loads[(wrapper.name, "invocations", len(batch))] = _under_load(wrapper, "invocations", batch)
    return loads


@contextmanager
def _running(server: Server, env: dict[str, str]) -> Iterator[float]:
    """Start the server, yield the seconds from start to ready, stop it."""
    started = time.perf_counter()
    process = subprocess.Popen(server.command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = started + 180
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{server.name} exited with code {process.returncode}")
            try:
                with urllib.request.urlopen(server.ready_url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.02)
        else:
            raise TimeoutError(f"{server.name} not ready in 180 s")
        yield time.perf_counter() - started
    finally:
        stop_process(process)


def _cold_starts(servers: list[Server], env: dict[str, str]) -> dict[str, list[float]]:
    """Each server's cold starts, in seconds, in the order taken."""
    times: dict[str, list[float]] = {}
    for _ in range(COLD_TRIALS):
        for server in servers:
            with _running(server, env) as seconds:
                times.setdefault(server.name, []).append(seconds)
    return times


def _under_load(server: Server, path: str, instances: list[dict[str, float]]) -> Load:
    base = server.ready_url.rsplit("/", 1)[0]
    body = {"instances": instances} if path == "predict" else {"dataframe_records": instances}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = {json.dumps(json.dumps(body))}\n")
        url = f"{base}/{path}"
        _wrk(url, script, WARM_UP)
        return _wrk(url, script, DURATION)


def _wrk(url: str, script: Path, seconds: int) -> Load:
    output = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                            capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    try:
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        return Load(rps=float(_find(r"^Requests/sec:\s+([\d.]+)$", output)),
                    p50_ms=_ms(_find(r"^\s+50%\s+(\S+)$", output)), p99_ms=_ms(_find(r"^\s+99%\s+(\S+)$", output)),
                    errors=int(errors.group(1)) if errors else 0)
    except ValueError as e:
        raise RuntimeError(f"unexpected wrk output ({e}):\n{output}") from None


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.M)
    if match is None:
        raise ValueError(f"no {pattern!r}")
    return match.group(1)


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"latency {text!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[match.group(2)]


def _report(cold: dict[str, list[float]], loads: dict[tuple[str, str, int], Load]) -> str:
    lines = [f"Machine: {os.cpu_count()} cores, load average after the run {os.getloadavg()[0]:.2f}. "
             f"wrk -t1 -c{CONNECTIONS} -d{DURATION}s after a {WARM_UP}s warm-up; one worker each; "
             f"median of {ROUNDS} alternating rounds (wrapper invocations: one round).", "",
             "| server | endpoint | instances | req/s | p50 ms | p99 ms | non-2xx |", "|---|---|---|---|---|---|---|"]
    for (name, path, size), load in loads.items():
        lines.append(f"| {name} | {path} | {size} | {load.rps:.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | "
                     f"{load.errors} |")
    lines += ["", "| ratio (wrapper predict / mlflow invocations) | 1 instance | 100 instances |", "|---|---|---|"]
    ours = {size: loads[("wrapper", "predict", size)] for size in (1, 100)}
    theirs = {size: loads[("mlflow models serve", "invocations", size)] for size in (1, 100)}
    lines.append("| req/s | " + " | ".join(f"{ours[s].rps / theirs[s].rps:.1f}x" for s in (1, 100)) + " |")
    lines.append("| p99 | " + " | ".join(f"{ours[s].p99_ms / theirs[s].p99_ms:.2f}" for s in (1, 100)) + " |")
    ours_s, theirs_s = (statistics.median(cold[name]) for name in ("wrapper", "mlflow models serve"))
    lines += ["", f"Cold start (process start to ready, median of {COLD_TRIALS}, alternating): wrapper {ours_s:.2f} s, "
              f"mlflow models serve {theirs_s:.2f} s, ratio {ours_s / theirs_s:.2f}. Trials: "
              + "; ".join(f"{name} " + ", ".join(f"{t:.2f}" for t in times) for name, times in cold.items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
