"""Benchmark: the model wrapper against the other Python model servers, same model, same run.

    python -m bench.wrapper            (or `make bench`)

Starts moto S3 and an MLflow server on loopback, logs the iris LogisticRegression with its
contract, then serves that one fitted estimator with each server, one worker each:

- **wrapper**: `python -m model_wrapper`, `POST /<slug>/api/predict` (validation, probabilities,
  labels); it fetches the model from MLflow and S3 itself, as a pod does;
- **mlflow models serve** (`--env-manager local`), `POST /invocations`; fetches from MLflow and S3 too;
- **KServe** 0.21: `kserve.Model` around the same estimator (bench/peers/kserve_iris.py), `POST
  /v1/models/iris:predict`, a bare predict; reads a local joblib file;
- **MLServer** 1.7 with `mlserver-sklearn` (`parallel_workers: 0`), the V2 protocol asking for
  `predict` and `predict_proba`; reads the same local file.

KServe and MLServer are installed by this script in virtualenvs of their own (under
$BENCH_VENVS, default ~/.cache/service-builder-bench/venvs; created once, reused after), so
their pins never meet the project's. Measured:

- cold start: process start until ready, median of COLD_TRIALS, the servers taking turns;
- load: wrk (Debian's) with a Lua POST script, 1 thread, 8 connections, DURATION s after a warm-up,
  for one instance and for 100 per request; every server takes its turn in each of ROUNDS rounds
  and the median round counts, so that other work on the machine weighs on all alike. The
  wrapper's invocations (MLflow's own parsing, for compatibility) is measured the same way, beside
  mlflow's.

Only loopback is ever contacted (the one-off virtualenv installs use the package index); every
process it starts is stopped. Prints a Markdown section for BENCHMARKS.md. Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.servers import LocalMlflow, LocalS3, free_port, stop_process

DURATION, WARM_UP, CONNECTIONS, COLD_TRIALS, ROUNDS = 8, 2, 8, 5, 3
INSTANCE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
ROW = list(INSTANCE.values())
PEERS = Path(__file__).resolve().parent / "peers"
VENVS = Path(os.environ.get("BENCH_VENVS", Path.home() / ".cache" / "service-builder-bench" / "venvs"))
PEER_PACKAGES = {
    "kserve": ["kserve==0.21.0", "scikit-learn==1.9.1", "numpy==2.4.6"],
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "scikit-learn==1.9.1", "numpy==2.4.6"],
}
Body = Callable[[int], dict[str, Any]]


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
    endpoints: dict[str, tuple[str, Body]]
    """Endpoint label → (URL, request body for n instances); the first is the one compared."""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


def main() -> int:
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    pythons = {name: _peer_python(name, packages) for name, packages in PEER_PACKAGES.items()}
    with _stack() as (mlflow_server, source, name, version, workdir):
        env = {**os.environ, **mlflow_server.client_env(),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        servers = _servers(source, name, version, workdir, pythons)
        cold = _cold_starts(servers, env)
        with _all_running(servers, env):
            loads = _loads(servers)
    print(_report(cold, loads, load_before))
    return 0


def _peer_python(name: str, packages: list[str]) -> str:
    """The interpreter of the peer's own virtualenv, created and installed the first time."""
    venv = VENVS / name
    marker = venv / "bench-packages.txt"
    if not marker.exists() or marker.read_text() != "\n".join(packages):
        print(f"installing {name} into {venv} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *packages], check=True, timeout=1800)
        marker.write_text("\n".join(packages))
    return str(venv / "bin" / "python")


@contextmanager
def _stack() -> Iterator[tuple[LocalMlflow, str, str, str, Path]]:
    s3 = LocalS3().start()
    mlflow_server = LocalMlflow(s3).start()
    try:
        os.environ.update(mlflow_server.client_env())
        import joblib
        import mlflow
        import mlflow.sklearn

        from devstack.models import log_iris

        mlflow.set_tracking_uri(mlflow_server.tracking_uri)
        with redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is the report
            model = log_iris("bench-iris")
        workdir = Path(tempfile.mkdtemp(prefix="bench-wrapper-"))
        # The very estimator the wrapper serves, for the peers that read a local file.
        joblib.dump(mlflow.sklearn.load_model(model.source), workdir / "model.joblib")
        yield mlflow_server, model.source, model.name, model.version, workdir
    finally:
        mlflow_server.cleanup()
        s3.stop()


def _servers(source: str, name: str, version: str, workdir: Path, pythons: dict[str, str]) -> list[Server]:
    def predict(n: int) -> dict[str, Any]:
        return {"instances": [INSTANCE] * n}

    def records(n: int) -> dict[str, Any]:
        return {"dataframe_records": [INSTANCE] * n}

    def rows(n: int) -> dict[str, Any]:
        return {"instances": [ROW] * n}

    def v2(n: int) -> dict[str, Any]:
        return {"inputs": [{"name": "input-0", "shape": [n, 4], "datatype": "FP64", "data": ROW * n}],
                "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}

    port = free_port()
    base = f"http://127.0.0.1:{port}/{name}/api"
    wrapper = Server("wrapper", ["env", f"MODEL_NAME={name}", f"MODEL_VERSION={version}", f"MODEL_SOURCE={source}",
                                 f"PORT={port}", "HOST=127.0.0.1", "WORKERS=1",
                                 f"TERMINATION_LOG={workdir / 'termination-log'}", sys.executable, "-m",
                                 "model_wrapper"],
                     f"{base}/ready", {"predict": (f"{base}/predict", predict),
                                       "invocations": (f"{base}/invocations", records)})
    port = free_port()
    mlflow_serve = Server("mlflow models serve", [sys.executable, "-m", "mlflow", "models", "serve", "-m", source,
                                                  "--env-manager", "local", "--workers", "1", "--host", "127.0.0.1",
                                                  "--port", str(port)],
                          f"http://127.0.0.1:{port}/ping",
                          {"invocations": (f"http://127.0.0.1:{port}/invocations", records)})
    port = free_port()
    kserve = Server("KServe", [pythons["kserve"], str(PEERS / "kserve_iris.py")],
                    f"http://127.0.0.1:{port}/v1/models/iris",
                    {"predict": (f"http://127.0.0.1:{port}/v1/models/iris:predict", rows)},
                    env={"PEER_PORT": str(port), "PEER_MODEL": str(workdir / "model.joblib")})
    mlserver = _mlserver(pythons["mlserver"], workdir, v2)
    return [wrapper, mlflow_serve, kserve, mlserver]


def _mlserver(python: str, workdir: Path, body: Body) -> Server:
    folder = workdir / "mlserver"
    folder.mkdir()
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
        "host": "127.0.0.1", "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(workdir / "model.joblib")}}))
    mlserver_bin = str(Path(python).parent / "mlserver")
    return Server("MLServer", [mlserver_bin, "start", str(folder)], f"http://127.0.0.1:{port}/v2/models/iris/ready",
                  {"infer": (f"http://127.0.0.1:{port}/v2/models/iris/infer", body)}, cwd=str(folder))


def _loads(servers: list[Server]) -> dict[tuple[str, str, int], Load]:
    """Every server is up (an idle one costs nothing); they take turns under the same load."""
    rounds: dict[tuple[str, str, int], list[Load]] = {}
    for size in (1, 100):
        for _ in range(ROUNDS):
            for server in servers:
                for label, (url, body) in server.endpoints.items():
                    rounds.setdefault((server.name, label, size), []).append(_under_load(url, body(size)))
    return {key: sorted(runs, key=lambda load: load.rps)[len(runs) // 2] for key, runs in rounds.items()}


@contextmanager
def _all_running(servers: list[Server], env: dict[str, str]) -> Iterator[None]:
    if not servers:
        yield
        return
    with _running(servers[0], env), _all_running(servers[1:], env):
        yield


@contextmanager
def _running(server: Server, env: dict[str, str]) -> Iterator[float]:
    """Start the server, yield the seconds from start to ready, stop it."""
    started = time.perf_counter()
    process = subprocess.Popen(server.command, env={**env, **server.env}, cwd=server.cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
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


def _under_load(url: str, body: dict[str, Any]) -> Load:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = {json.dumps(json.dumps(body))}\n")
        _wrk(url, script, WARM_UP)
        return _wrk(url, script, DURATION)


def _wrk(url: str, script: Path, seconds: int) -> Load:
    output = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                            capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    try:
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        return Load(rps=float(_find(r"^Requests/sec:\s+([\d.]+)$", output)),
                    # wrk pads a latency of a second or more ("1.09s ") with a space
                    p50_ms=_ms(_find(r"^\s+50%\s+(\S+)\s*$", output)),
                    p99_ms=_ms(_find(r"^\s+99%\s+(\S+)\s*$", output)),
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


def _report(cold: dict[str, list[float]], loads: dict[tuple[str, str, int], Load],
            load_before: tuple[float, float, float]) -> str:
    lines = [f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average (1 min) "
             f"{load_before[0]:.1f} before and {os.getloadavg()[0]:.1f} after. wrk -t1 -c{CONNECTIONS} "
             f"-d{DURATION}s after a {WARM_UP}s warm-up; one worker each; median of {ROUNDS} rounds in which "
             "every server takes its turn.", "",
             "| server | endpoint | instances | req/s | p50 ms | p99 ms | non-2xx |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (name, path, size), load in sorted(loads.items(), key=lambda item: item[0][2]):
        lines.append(f"| {name} | {path} | {size} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | "
                     f"{load.errors} |")
    ours = {size: loads[("wrapper", "predict", size)] for size in (1, 100)}
    peers = {"mlflow models serve": "invocations", "KServe": "predict", "MLServer": "infer"}
    lines += ["", "| wrapper predict vs | req/s, 1 | req/s, 100 | p99, 1 | p99, 100 | cold start |",
              "|---|---:|---:|---:|---:|---:|"]
    ours_cold = statistics.median(cold["wrapper"])
    for peer, path in peers.items():
        theirs = {size: loads[(peer, path, size)] for size in (1, 100)}
        ratios = [f"{ours[s].rps / theirs[s].rps:.2f}x" for s in (1, 100)]
        ratios += [f"{ours[s].p99_ms / theirs[s].p99_ms:.2f}" for s in (1, 100)]
        ratios.append(f"{ours_cold / statistics.median(cold[peer]):.2f}")
        lines.append(f"| {peer} | " + " | ".join(ratios) + " |")
    invocations = {size: loads[("wrapper", "invocations", size)].rps / loads[("mlflow models serve", "invocations",
                                                                                size)].rps for size in (1, 100)}
    lines += ["", "(req/s: higher is better for the wrapper; p99 and cold start: the wrapper's over the peer's, "
              f"lower is better.) Wrapper invocations vs mlflow's invocations, req/s: {invocations[1]:.2f}x at 1, "
              f"{invocations[100]:.2f}x at 100.", "",
              f"Cold start, process start to ready, median of {COLD_TRIALS} (trials in order): " + "; ".join(
                  f"{name} **{statistics.median(times):.2f} s** (" + ", ".join(f"{t:.2f}" for t in times) + ")"
                  for name, times in cold.items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
