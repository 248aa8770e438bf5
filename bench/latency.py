"""Benchmark: detection latency, from a tag set in MLflow to `deployment_status=deployed` on that version.

    python -m bench.latency [--tags 20] [--poll-interval 10]      (or `make bench`)

Starts moto S3, a real `mlflow server` with the webhook settings and kmock (every Deployment is
ready at once, so the rollout wait is excluded) on loopback, then runs the watcher as the cluster
would, in a child process, once per path:

- webhook: `serve-webhooks` (polling set to an hour), registered with `register-webhook`;
- polling: `watch` at POLL_INTERVAL_SECONDS; each tag is set at a random point of the interval,
  as a researcher would, so the figures cover the whole wait between two polls.

Each of the `--tags` measurements tags a fresh model and polls its version every 25 ms until the
watcher's tag appears. Every loop is bounded; only loopback is contacted; every process started
is stopped. Prints a Markdown section for BENCHMARKS.md. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from devstack.models import LoggedModel, log_iris, register_versions
from devstack.servers import LocalMlflow, LocalS3, free_port, stop_process, wait_http
from tests.peers import KubernetesPeer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-webhook-secret-0b7e"
FERNET_KEY = base64.urlsafe_b64encode(b"service-builder-bench-fernet-key").decode()
SERVER_ENV = {"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
              "MLFLOW_WEBHOOK_CACHE_TTL": "1", "MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": FERNET_KEY}
CHECK_EVERY = 0.025
Sample = tuple[str, float, float]
LOAD_AT_START = os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--poll-interval", type=int, default=10)
    args = parser.parse_args()
    s3 = LocalS3().start()
    server = LocalMlflow(s3, extra_env=SERVER_ENV)
    kube = KubernetesPeer().start()
    try:
        server.start()
        os.environ.update(server.client_env())
        mlflow.set_tracking_uri(server.tracking_uri)
        files = log_iris("bench-latency-iris")
        webhook, split = measure_webhook(server, kube, files, args.tags)
        polling = measure_polling(server, kube, files, args.tags, args.poll_interval)
    finally:
        kube.stop()
        server.cleanup()
        s3.stop()
    print(report([seconds for _, _, seconds in webhook], [seconds for _, _, seconds in polling], split,
                 args.poll_interval))


def measure_webhook(server: LocalMlflow, kube: KubernetesPeer, files: LoggedModel, count: int
                    ) -> tuple[list[Sample], tuple[float, float]]:
    """The samples, and the medians of their two parts: delivery (tag set → receiver) and the deploying pass."""
    env = watcher_env(server, kube, "webhook", POLL_INTERVAL_SECONDS="3600", WEBHOOK_PORT=str(free_port()))
    log = Path(server.workdir) / "serve-webhooks.log"
    with child(["serve-webhooks"], env, log):
        base = f"http://127.0.0.1:{env['WEBHOOK_PORT']}"
        wait_http(f"{base}/healthz", 60)
        subprocess.run([sys.executable, "-m", "watcher", "register-webhook", base], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        time.sleep(1.5)  # the server caches webhook lists for MLFLOW_WEBHOOK_CACHE_TTL (1 s here)
        measure(files, "webhook-warmup", 1, lambda: 0.3, timeout=30)  # imports and first connections
        samples = measure(files, "webhook", count, lambda: random.uniform(0.2, 0.5), timeout=30)
    return samples, split_of(samples, log)


def split_of(samples: list[Sample], log: Path) -> tuple[float, float]:
    """From the receiver's JSON log: when each delivery was accepted, and how long the deploying passes took."""
    tagged = {name: at for name, at, _ in samples}
    delivered, passes = [], []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue  # a library writing to stderr directly
        entry = json.loads(line)
        if entry.get("model") in tagged and "received; reconciling" in entry["message"]:
            accepted = datetime.strptime(entry["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            delivered.append(accepted - tagged[entry["model"]])
        elif entry["message"].startswith("pass done: found=1 deployed=1"):
            passes.append(float(entry["message"].rsplit("duration=", 1)[1].split("s")[0]))
    return statistics.median(delivered), statistics.median(passes)


def measure_polling(server: LocalMlflow, kube: KubernetesPeer, files: LoggedModel, count: int,
                    interval: int) -> list[Sample]:
    metrics = free_port()
    env = watcher_env(server, kube, "polling", POLL_INTERVAL_SECONDS=str(interval), METRICS_PORT=str(metrics))
    with child(["watch"], env, Path(os.devnull)):
        wait_http(f"http://127.0.0.1:{metrics}/metrics", 60)
        return measure(files, "polling", count, lambda: random.uniform(0, interval), timeout=2 * interval + 30)


def measure(files: LoggedModel, path: str, count: int, pause: Callable[[], float], timeout: float
            ) -> list[Sample]:
    """Tag `count` fresh models one after another: (model, when tagged, seconds until its deployed status)."""
    client = MlflowClient()
    samples = []
    for number in range(count):
        name = f"bench-{path}-{number}-{random.randrange(16**6):06x}"
        version = register_versions(name, files)[0]
        time.sleep(pause())
        tagged_at, started = time.time(), time.perf_counter()
        client.set_model_version_tag(name, version, "deploy", path.removesuffix("-warmup"))
        deadline = started + timeout
        while client.get_model_version(name, version).tags.get("deployment_status") != "deployed":
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{name} v{version} not deployed within {timeout:.0f}s on the {path} path")
            time.sleep(CHECK_EVERY)
        samples.append((name, tagged_at, time.perf_counter() - started))
    return samples


def watcher_env(server: LocalMlflow, kube: KubernetesPeer, path: str, **extra: str) -> dict[str, str]:
    return {**os.environ, **server.client_env(), "K8S_API": kube.url, "K8S_NAME_SPACE": f"bench-{path}",
            "SELECTOR": f"tag:deploy={path}", "SERVICE_BUILDER_HOST_NAME": "models.example.org",
            "LISTEN_ADDRESS": "127.0.0.1", "WEBHOOK_SECRET": SECRET, "LOG_FORMAT": "json", "SMOKE_TEST": "off",
            "PYTHONPATH": str(ROOT), **extra}


@contextmanager
def child(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "watcher", *args], env=env, cwd=ROOT, stdout=sink,
                                   stderr=sink, start_new_session=True)
    try:
        yield process
    finally:
        stop_process(process)


def report(webhook: list[float], polling: list[float], split: tuple[float, float], interval: int) -> str:
    def row(path: str, values: list[float]) -> str:
        return (f"| {path} | {len(values)} | {statistics.median(values):.2f} s | {statistics.mean(values):.2f} s "
                f"| {max(values):.2f} s |")

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return "\n".join([
        "## Detection latency",
        "",
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"load average {LOAD_AT_START:.1f} at the start; `python -m bench.latency`: tag set in MLflow → "
        "`deployment_status=deployed` on that version; kmock with every Deployment ready at once, so the "
        "rollout wait is excluded.",
        "",
        "| path | tags | p50 | mean | max |",
        "|---|---|---|---|---|",
        row("webhook (`serve-webhooks`)", webhook),
        row(f"polling (`watch`, POLL_INTERVAL_SECONDS={interval})", polling),
        "",
        f"Webhook path, medians of its two parts: tag set → delivery accepted by the receiver {split[0]:.2f} s; "
        f"the pass that deploys the model {split[1]:.2f} s.",
    ])


if __name__ == "__main__":
    main()
