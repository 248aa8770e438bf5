"""Benchmark: what a rollout costs the callers of the live version on the local target, in the same run.

    python -m bench.shadow [--duration 5] [--rounds 3]

Logs the iris LogisticRegression with its contract to a loopback MLflow server and moto S3 (as
`bench.wrapper` does), starts two wrappers of it (one worker each: the live version and a candidate) and
the local target's front (`watcher.targets.local_front`), then takes turns under wrk through the front,
one `predict` instance per request, with the front's routes set as the local target sets them:

- no rollout: the live wrapper alone;
- shadow 10% / shadow 100%: the live wrapper answers; that share of requests is also sent to the candidate
  and the two answers compared, off the caller's path;
- canary 10%: the candidate answers a tenth of the requests (every one of its answers compared with live).

With `--live-wrapper`, the Kubernetes way: no front, the callers ask the live wrapper, which mirrors the
sample its SHADOW_CONFIG file names to the candidate itself (no rollout, shadow 10%, shadow 100%).

With `--own-core` (Linux), the candidate runs on a CPU of its own and everything else (the live wrapper, the
front, wrk) on the other: on a cluster the candidate's pods have CPU of their own, and on this 2-core machine it
would otherwise take the live version's. Every mode of the run is pinned alike, "no rollout" included.

The median of the rounds counts; the figures are the callers' throughput and p50/p99, and the ratios to
"no rollout". Prints a Markdown section for BENCHMARKS.md; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import bench.wrapper as wrapper_bench
from bench.wrapper import INSTANCE, Load, _stack, _under_load
from devstack.servers import free_port, stop_process
from watcher.targets.local_front import HEALTH_PATH, ROUTES_FILE, Backend, write_routes

MODES = {"no rollout": (0, 0.0), "shadow 10%": (0, 0.1), "shadow 100%": (0, 1.0), "canary 10%": (10, 1.0)}
LIVE_MIRRORS = {"no rollout": None, "shadow 10%": 0.1, "shadow 100%": 1.0}
"""Kubernetes' way (`--live-wrapper`): no front; the live wrapper itself mirrors the sample its SHADOW_CONFIG
file names (`model_wrapper.http.shadow`), and the callers ask it directly."""
CANDIDATE_CPUS: set[int] | None = None
"""Where the candidate runs: anywhere, or (`--own-core`) on a CPU no other process of the run uses."""
PINNED = "the candidate alone on CPU 1, the rest on CPU 0; "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shadow")
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per trial")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1,
                        help="wrk connections: 1 measures the path (no queueing), 8 saturates this machine")
    parser.add_argument("--live-wrapper", action="store_true",
                        help="shadows as on Kubernetes: mirrored by the live wrapper, no front")
    parser.add_argument("--own-core", action="store_true",
                        help="the candidate on CPU 1 alone; the live wrapper, the front and wrk on CPU 0")
    args = parser.parse_args(argv)
    global CANDIDATE_CPUS
    if args.own_core:
        os.sched_setaffinity(0, {0})  # this process and all it starts (wrk, the servers) but the candidate
        CANDIDATE_CPUS = {1}
    wrapper_bench.DURATION, wrapper_bench.CONNECTIONS = args.duration, args.connections
    load_before = os.getloadavg()
    with _stack() as (mlflow_server, source, name, version, workdir):
        env = {**os.environ, **mlflow_server.client_env()}
        if args.live_wrapper:
            config = workdir / "shadow.json"
            with _wrapper(env, source, name, version, CANDIDATE_CPUS) as candidate, \
                    _wrapper({**env, "SHADOW_CONFIG": str(config)}, source, name, version) as live:
                loads = _mirrored_loads(config, name, version, live, candidate, args.rounds)
        else:
            with _wrapper(env, source, name, version) as live, \
                    _wrapper(env, source, name, version, CANDIDATE_CPUS) as candidate, \
                    _front(env, workdir) as (state, port):
                loads = _loads(state, port, name, live, candidate, args.rounds)
    print(_report(loads, load_before, args))
    return 0


def _mirrored_loads(config: Path, name: str, version: str, live: tuple[int, int], candidate: tuple[int, int],
                    rounds: int) -> dict[str, Load]:
    """As `_loads`, with the live wrapper's mirroring file written (or removed) for each mode instead of routes."""
    taken: dict[str, list[Load]] = {}
    url = f"http://127.0.0.1:{live[1]}/{name}/api/predict"
    for _ in range(rounds):
        for mode, sample in LIVE_MIRRORS.items():
            if sample is None:
                config.unlink(missing_ok=True)
            else:
                config.write_text(json.dumps({"candidate": f"http://127.0.0.1:{candidate[1]}", "version": version,
                                              "sample": sample}))
            time.sleep(1.5)  # the wrapper looks at the file at most once a second
            taken.setdefault(mode, []).append(_under_load(url, {"instances": [INSTANCE]}))
    return {mode: sorted(runs, key=lambda load: load.rps)[len(runs) // 2] for mode, runs in taken.items()}


def _loads(state: Path, port: int, name: str, live: tuple[int, int], candidate: tuple[int, int],
           rounds: int) -> dict[str, Load]:
    taken: dict[str, list[Load]] = {}
    url = f"http://127.0.0.1:{port}/{name}/api/predict"
    for _ in range(rounds):
        for mode, (percent, sample) in MODES.items():
            routes = [Backend(f"http://127.0.0.1:{live[1]}", live[0], 100 - percent)]
            if sample:
                routes.append(Backend(f"http://127.0.0.1:{candidate[1]}", candidate[0], percent, candidate=True,
                                      sample=sample))
            write_routes(state / ROUTES_FILE, {name: routes})
            time.sleep(0.2)
            taken.setdefault(mode, []).append(_under_load(url, {"instances": [INSTANCE]}))
    return {mode: sorted(runs, key=lambda load: load.rps)[len(runs) // 2] for mode, runs in taken.items()}


@contextmanager
def _wrapper(env: dict[str, str], source: str, name: str, version: str,
             cpus: set[int] | None = None) -> Iterator[tuple[int, int]]:
    port = free_port()
    pinned = ["taskset", "--cpu-list", ",".join(map(str, sorted(cpus)))] if cpus else []  # from its first thread
    process = subprocess.Popen([*pinned, sys.executable, "-m", "model_wrapper"], env={
        **env, "MODEL_NAME": name, "MODEL_VERSION": version, "MODEL_SOURCE": source, "PORT": str(port),
        "HOST": "127.0.0.1", "WORKERS": "1", "DRAIN_SECONDS": "0", "TERMINATION_LOG": os.devnull},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/{name}/api/ready", process)
        yield process.pid, port
    finally:
        stop_process(process)


@contextmanager
def _front(env: dict[str, str], workdir: Path) -> Iterator[tuple[Path, int]]:
    state, port = Path(tempfile.mkdtemp(dir=workdir)), free_port()
    process = subprocess.Popen([sys.executable, "-m", "watcher.targets.local_front", str(state), str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}{HEALTH_PATH}", process)
        yield state, port
    finally:
        stop_process(process)


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def _report(loads: dict[str, Load], load_before: tuple[float, float, float], args: argparse.Namespace) -> str:
    base = loads["no rollout"]
    lines = [f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores (shared), load average (1 min) "
             f"{load_before[0]:.1f} before and {os.getloadavg()[0]:.1f} after; wrk -t1 "
             f"-c{wrapper_bench.CONNECTIONS} -d{args.duration}s "
             f"{'at the live wrapper, which mirrors' if args.live_wrapper else 'through the local front'}, "
             "1 instance per request; "
             f"{PINNED if args.own_core else ''}median of {args.rounds} rounds taken in turns.", "",
             "| routes | req/s | p50 ms | p99 ms | non-2xx | req/s vs no rollout | p50 vs no rollout |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, load in loads.items():
        lines.append(f"| {mode} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.errors} | "
                     f"{load.rps / base.rps:.2f}x | {load.p50_ms - base.p50_ms:+.2f} ms |")
    return "\n".join(lines) + "\n\n" + json.dumps({mode: vars(load) for mode, load in loads.items()})


if __name__ == "__main__":
    raise SystemExit(main())
