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

- cold start: process start until ready, COLD_TRIALS times, the servers taking turns,
  each round starting one server later (A B C, B C A, ...);
  the wrapper twice: from the same local files the peers read (`MODEL_SOURCE=file:///…`, the MLflow
  model directory downloaded once) and fetching from MLflow and S3 as a pod does; the fetch is the
  difference of the two in each round;
- load: wrk (Debian's) with a Lua POST script, 1 thread, 8 connections, DURATION s after a warm-up,
  for one instance and for 100 per request; every server takes its turn in each of ROUNDS rounds
  (each starting one server later, as the cold starts), so that other work on the machine weighs
  on all alike. The wrapper's invocations (MLflow's own parsing, for compatibility) is measured the
  same way, beside mlflow's.

Each ratio is taken within a round (the wrapper's trial over the peer's next to it), and reported
as the median and the spread (lowest to highest) over the rounds: a target counts as met only when
the whole spread is on the right side of it.

Only loopback is ever contacted (the one-off virtualenv installs use the package index); every
process it starts is stopped. Prints a Markdown section for BENCHMARKS.md. Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.demo import post
from devstack.servers import LocalMlflow, LocalS3, free_port, stop_process

DURATION, WARM_UP, CONNECTIONS, COLD_TRIALS, ROUNDS = 8, 2, 8, 5, 5
INSTANCE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
ROW = list(INSTANCE.values())
PEERS = Path(__file__).resolve().parent / "peers"
VENVS = Path(os.environ.get("BENCH_VENVS", Path.home() / ".cache" / "service-builder-bench" / "venvs"))
PEER_PACKAGES = {
    "kserve": ["kserve==0.21.0", "scikit-learn==1.9.1", "numpy==2.4.6"],
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "scikit-learn==1.9.1", "numpy==2.4.6"],
}
Body = Callable[[int], dict[str, Any]]
LOCAL = "wrapper, local files"
PIDS: dict[str, int] = {}
"""The process of each running server, by name (for its CPU time)."""


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float | None = None
    """CPU time (all threads) the server process spent per request during the run, when measured."""
    children_cpu_us: float | None = None
    """CPU time its child processes (the wrapper's inference-log writer) spent per request, likewise."""


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    ready_url: str
    endpoints: dict[str, tuple[str, Body]]
    """Endpoint label → (URL, request body for n instances); the first is the one compared."""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    settle: tuple[str, dict[str, Any]] | None = None
    """A request sent once after `ready`, before any measurement, that returns only when work the server
    still does after it turned ready is done (ours builds MLflow's scorer for `invocations` in the
    background, seconds of CPU that would otherwise weigh on its first round)."""


def main(argv: list[str] | None = None) -> int:
    global DURATION, COLD_TRIALS, ROUNDS  # the command line sets the defaults
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="load rounds (every server once in each)")
    parser.add_argument("--cold-trials", type=int, default=COLD_TRIALS)
    parser.add_argument("--duration", type=int, default=DURATION, help="seconds of load per trial")
    args = parser.parse_args(argv)
    DURATION, COLD_TRIALS, ROUNDS = args.duration, args.cold_trials, args.rounds
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    pythons = {name: _peer_python(name, packages) for name, packages in PEER_PACKAGES.items()}
    with _stack() as (mlflow_server, source, name, version, workdir):
        env = {**os.environ, **mlflow_server.client_env(),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        servers = _servers(source, name, version, workdir, pythons)
        # As the image does at build (Dockerfile): skops' trusted types kept before the first start.
        subprocess.run([sys.executable, "-m", "model_wrapper.loading.skops_trust"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        cold = _cold_starts([_from_local_files(servers[0], workdir), *servers], env)
        with _all_running(servers, env):
            loads = _loads(servers)
    print(_report(cold, loads, load_before))
    return 0


def _from_local_files(wrapper: Server, workdir: Path) -> Server:
    """The wrapper serving the MLflow model directory already on disk, as the peers read theirs."""
    command = [f"MODEL_SOURCE={(workdir / 'mlflow-model').as_uri()}" if part.startswith("MODEL_SOURCE=") else part
               for part in wrapper.command]
    return Server(LOCAL, command, wrapper.ready_url, wrapper.endpoints, wrapper.env, wrapper.cwd)


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
        import mlflow.artifacts
        import mlflow.sklearn

        from devstack.models import log_iris

        mlflow.set_tracking_uri(mlflow_server.tracking_uri)
        with redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is the report
            model = log_iris("bench-iris")
        workdir = Path(tempfile.mkdtemp(prefix="bench-wrapper-"))
        # The very estimator the wrapper serves, for the peers that read a local file.
        joblib.dump(mlflow.sklearn.load_model(model.source), workdir / "model.joblib")
        # And the same model's MLflow directory, for the wrapper's cold start from local files.
        mlflow.artifacts.download_artifacts(artifact_uri=model.source, dst_path=str(workdir / "mlflow-model"))
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
                                 f"PORT={port}", "HOST=127.0.0.1", "WORKERS=1", "DRAIN_SECONDS=0",
                                 f"TERMINATION_LOG={workdir / 'termination-log'}", sys.executable, "-m",
                                 "model_wrapper"],
                     f"{base}/ready", {"predict": (f"{base}/predict", predict),
                                       "invocations": (f"{base}/invocations", records)},
                     settle=(f"{base}/invocations", records(1)))
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


def _mlserver(python: str, workdir: Path, body: Body, *, implementation: str = "mlserver_sklearn.SKLearnModel",
              uri: str | None = None, name: str = "MLServer", label: str = "infer") -> Server:
    """MLServer serving the model as `iris` with `implementation` (by default the estimator's joblib file)."""
    folder = workdir / "mlserver"
    folder.mkdir()
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
        "host": "127.0.0.1", "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": implementation,
        "parameters": {"uri": uri or str(workdir / "model.joblib")}}))
    mlserver_bin = str(Path(python).parent / "mlserver")
    return Server(name, [mlserver_bin, "start", str(folder)], f"http://127.0.0.1:{port}/v2/models/iris/ready",
                  {label: (f"http://127.0.0.1:{port}/v2/models/iris/infer", body)}, cwd=str(folder))


def _loads(servers: list[Server]) -> dict[tuple[str, str, int], list[Load]]:
    """Every server is up (an idle one costs nothing); they take turns under the same load. Each
    (server, endpoint, instances) has one Load per round, in round order."""
    rounds: dict[tuple[str, str, int], list[Load]] = {}
    for size in (1, 100):
        for number in range(ROUNDS):
            for server in in_turn(servers, number):
                for label, (url, body) in server.endpoints.items():
                    rounds.setdefault((server.name, label, size), []).append(_under_load(url, body(size)))
    return rounds


def in_turn(servers: list[Server], number: int) -> list[Server]:
    """The servers in round `number`'s order: each round starts one server later, so that none always goes
    first or last (right after a warm-up of the machine, or right after the one whose leftovers run on)."""
    shift = number % len(servers)
    return servers[shift:] + servers[:shift]


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
    PIDS[server.name] = process.pid
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
        ready = time.perf_counter() - started
        if server.settle is not None:
            post(*server.settle)
        yield ready
    finally:
        stop_process(process)


def _cold_starts(servers: list[Server], env: dict[str, str]) -> dict[str, list[float]]:
    """Each server's cold starts, in seconds, in the order taken."""
    times: dict[str, list[float]] = {}
    for number in range(COLD_TRIALS):
        for server in in_turn(servers, number):
            with _running(server, env) as seconds:
                times.setdefault(server.name, []).append(seconds)
    return times


def _under_load(url: str, body: dict[str, Any], pid: int | None = None) -> Load:
    """wrk's figures after a warm-up; with `pid`, also that process's CPU time per request."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = {json.dumps(json.dumps(body))}\n")
        _wrk(url, script, WARM_UP)
        cpu_before = _cpu_seconds(pid) if pid else 0.0
        children_before = _children_cpu_seconds(pid) if pid else 0.0
        load = _wrk(url, script, DURATION)
        if not pid:
            return load
        requests = load.rps * DURATION
        return replace(load, cpu_us=(_cpu_seconds(pid) - cpu_before) / requests * 1e6,
                       children_cpu_us=(_children_cpu_seconds(pid) - children_before) / requests * 1e6)


def _cpu_seconds(pid: int | str) -> float:
    """User and system time of a process, all its threads (proc(5): fields 14 and 15 of its stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds(pid: int) -> float:
    """The same for the process's running children (proc(5): /proc/pid/task/tid/children)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(_cpu_seconds(child) for child in children)


def _wrk(url: str, script: Path, seconds: int) -> Load:
    output = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                            capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    try:
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        # wrk pads some latencies with a trailing space ("1.18s ").
        return Load(rps=float(_find(r"^Requests/sec:\s+([\d.]+)\s*$", output)),
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


def _report(cold: dict[str, list[float]], loads: dict[tuple[str, str, int], list[Load]],
            load_before: tuple[float, float, float]) -> str:
    lines = [f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average (1 min) "
             f"{load_before[0]:.1f} before and {os.getloadavg()[0]:.1f} after. wrk -t1 -c{CONNECTIONS} "
             f"-d{DURATION}s after a {WARM_UP}s warm-up; one worker each; {ROUNDS} rounds in which every server "
             f"takes its turn; {COLD_TRIALS} cold starts each, taking turns.", "",
             "| server | endpoint | instances | req/s (median) | p50 ms | p99 ms | non-2xx (all rounds) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (name, path, size), runs in sorted(loads.items(), key=lambda item: item[0][2]):
        lines.append(f"| {name} | {path} | {size} | {_median(r.rps for r in runs):,.0f} | "
                     f"{_median(r.p50_ms for r in runs):.2f} | {_median(r.p99_ms for r in runs):.2f} | "
                     f"{sum(r.errors for r in runs)} |")
    lines += ["", "Ratios within each round: median (lowest to highest).", "",
              "| wrapper predict vs | req/s, 1 | req/s, 100 | p99, 1 | p99, 100 | cold start, local files |",
              "|---|---:|---:|---:|---:|---:|"]
    for peer, path in {"mlflow models serve": "invocations", "KServe": "predict", "MLServer": "infer"}.items():
        cells = [_spread(_paired(loads, ("wrapper", "predict", s), (peer, path, s), "rps")) for s in (1, 100)]
        cells += [_spread(_paired(loads, ("wrapper", "predict", s), (peer, path, s), "p99_ms"), "") for s in (1, 100)]
        cells.append(_spread([ours / theirs for ours, theirs in zip(cold[LOCAL], cold[peer], strict=True)], ""))
        lines.append(f"| {peer} | " + " | ".join(cells) + " |")
    invocations = [_spread(_paired(loads, ("wrapper", "invocations", s), ("mlflow models serve", "invocations", s),
                                   "rps")) for s in (1, 100)]
    fetch = [fetched - local for fetched, local in zip(cold["wrapper"], cold[LOCAL], strict=True)]
    lines += ["", "(req/s: higher is better for the wrapper; p99 and cold start: the wrapper's over the peer's, "
              f"lower is better.) Wrapper invocations vs mlflow's invocations, req/s: {invocations[0]} at 1, "
              f"{invocations[1]} at 100. The fetch from MLflow and S3, on top of the local cold start "
              f"(the two wrapper trials of each round): {_spread(fetch, unit=' s')}.", "",
              "Cold start, process start to ready (trials in order): " + "; ".join(
                  f"{name} **{_median(times):.2f} s** (" + ", ".join(f"{t:.2f}" for t in times) + ")"
                  for name, times in cold.items()) + "."]
    return "\n".join(lines)


def _paired(loads: dict[tuple[str, str, int], list[Load]], ours: tuple[str, str, int], theirs: tuple[str, str, int],
            figure: str) -> list[float]:
    """Our figure over theirs, round by round."""
    return [getattr(a, figure) / getattr(b, figure) for a, b in zip(loads[ours], loads[theirs], strict=True)]


def _median(values: Any) -> float:
    return statistics.median(list(values))


def _spread(values: list[float], unit: str = "x") -> str:
    return f"{_median(values):.2f}{unit} ({min(values):.2f} to {max(values):.2f})"


if __name__ == "__main__":
    sys.exit(main())
