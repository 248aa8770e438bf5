"""Benchmark: what one reconcile pass costs on registries of 1,000, 10,000 and 100,000 versions.

    python -m bench.reconcile [--sizes 1000,10000,100000] [--selected 20]      (or `make bench`)
    python -m bench.reconcile --deployed 20,200,1000

With `--deployed`, a steady-state pass over that many *deployed* models instead (see
`measure_deployed`): the watcher's own time (the pass less the time spent waiting for the registry
and the API server) and the wall time, and the requests, at each count.

For each size, a fresh `mlflow server` (sqlite, one worker) holds SIZE versions, 10 per registered
model, of which SELECTED (the newest version of the first SELECTED models) carry deploy=production;
kmock plays the Kubernetes API. Two ways of finding the selected versions, measured the same way
(the server's own access log, kmock's request journal, the wall time of the whole pass):

- watcher: one server-side filtered, paged `search_model_versions` (what `run-once` does);
- naive: every registered model, then every version of each, filtered on the client (the way the
  older DPM360 service builder listed the registry).

The first watcher pass deploys the selected models (the "with changes" row); steady-state passes
have nothing to do. Seeding: the versions are inserted with MLflow's own SQLAlchemy models before
the server starts (creating 100,000 versions over HTTP would take most of an hour); every measured
request goes through the server's REST API. Only loopback is contacted; every process started is
stopped. Prints a Markdown section for BENCHMARKS.md. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

import mlflow
import urllib3
from mlflow import MlflowClient
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion,
    SqlModelVersionTag,
    SqlRegisteredModel,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from sqlalchemy import insert

from devstack.models import log_iris
from devstack.servers import LocalMlflow, LocalS3
from model_wrapper.contract.naming import model_slug
from tests.peers import KubernetesPeer, MlflowAccessLog
from watcher.clients.registry import Registry
from watcher.config.settings import load_settings
from watcher.decide.types import Selector, VersionInfo
from watcher.entry.cli import build_deps
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.render.manifests import Release

VERSIONS_EACH = 10
TAG = ("deploy", "production")


@dataclass(frozen=True)
class Row:
    size: int
    approach: str
    phase: str
    seconds: float
    mlflow: int
    kubernetes: int
    kubernetes_writes: int


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.deployed:
        return measure_deployed([int(count) for count in args.deployed.split(",")])
    sizes = [int(size) for size in args.sizes.split(",")]
    rows: list[Row] = []
    s3, kube = LocalS3().start(), KubernetesPeer().start()
    try:
        source = _log_model_files(s3)
        for size in sizes:
            started = time.monotonic()
            rows.extend(_measure(s3, kube, source, size, args.selected))
            print(f"{size} versions measured in {time.monotonic() - started:.0f}s", file=sys.stderr)
    finally:
        kube.stop()
        s3.stop()
    print(_markdown(rows, args.selected))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="registry sizes, in versions")
    parser.add_argument("--selected", type=int, default=20, help="versions that carry deploy=production")
    parser.add_argument("--deployed", default="", help="deployed-model counts for the flat-pass measurement, "
                                                       "e.g. 20,200,1000")
    return parser


def _log_model_files(s3: LocalS3) -> str:
    """Log the iris model once (contract included) and return where its files are in S3."""
    server = LocalMlflow(s3).start()
    try:
        os.environ.update(server.client_env())
        mlflow.set_tracking_uri(server.tracking_uri)
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is the Markdown
            logged = log_iris("bench-iris")
        return str(MlflowClient().get_logged_model(logged.source.removeprefix("models:/")).artifact_location)
    finally:
        server.cleanup()


def _measure(s3: LocalS3, kube: KubernetesPeer, source: str, size: int, selected: int) -> list[Row]:
    server = LocalMlflow(s3)
    _seed(server.workdir / "mlflow.db", size, selected, source)
    server.start(timeout=300)
    try:
        os.environ.update(server.client_env())
        deps = _deps(server, kube, f"bench-{size}")
        naive = replace(deps, registry=NaiveRegistry(server.tracking_uri))
        _forget_requests(kube)
        log = MlflowAccessLog(server.workdir / "server.log")
        repeats = 3 if size <= 10_000 else 1
        return [_timed(deps, kube, log, size, "watcher", "first pass: deploys the selected", 1),
                _timed(deps, kube, log, size, "watcher", "steady state", repeats),
                _timed(naive, kube, log, size, "naive", "steady state", repeats)]
    finally:
        server.cleanup()


def _seed(db: Path, size: int, selected: int, source: str) -> None:
    """SIZE versions in SIZE/10 models, written with MLflow's own SQLAlchemy models (its schema, its defaults)."""
    store = SqlAlchemyStore(f"sqlite:///{db}")  # creates the schema, as the server would
    now = int(time.time() * 1000)
    names = [f"model-{index:06d}" for index in range(size // VERSIONS_EACH)]
    versions = [{"name": name, "version": number, "source": source, "storage_location": source, "creation_time": now,
                 "last_updated_time": now, "current_stage": "None", "status": "READY"}
                for name in names for number in range(1, VERSIONS_EACH + 1)]
    with store.ManagedSessionMaker() as session:
        session.execute(insert(SqlRegisteredModel),
                        [{"name": name, "creation_time": now, "last_updated_time": now} for name in names])
        session.execute(insert(SqlModelVersion), versions)
        session.execute(insert(SqlModelVersionTag), [{"name": name, "version": VERSIONS_EACH, "key": TAG[0],
                                                      "value": TAG[1]} for name in names[:selected]])
    store.engine.dispose()


def _deps(server: LocalMlflow, kube: KubernetesPeer, namespace: str) -> Deps:
    settings = load_settings(
        mlflow_tracking_uri=server.tracking_uri, mlflow_s3_endpoint_url=server.s3.endpoint_url,
        aws_access_key_id="devstack-key", aws_secret_access_key="devstack-secret", k8s_api=kube.url,
        k8s_name_space=namespace, selector=f"tag:{TAG[0]}={TAG[1]}", rollout_timeout_seconds=30)
    return build_deps(settings, clock=lambda: datetime.now(UTC))


def _timed(deps: Deps, kube: KubernetesPeer, log: MlflowAccessLog, size: int, approach: str, phase: str,
           repeats: int) -> Row:
    seconds, mlflow_requests, kube_requests, kube_writes = [], 0, 0, 0
    namespace = deps.settings.k8s_name_space
    for _ in range(repeats):
        log.mark()
        before = kube.requests(namespace)
        started = time.monotonic()
        report = reconcile_once(deps)
        seconds.append(time.monotonic() - started)
        if report.failed:
            raise RuntimeError(f"{approach} {phase} at {size}: {report.failures[:3]}")
        after = kube.requests(namespace)[len(before):]
        mlflow_requests, kube_requests = len(log.since()), len(after)
        kube_writes = sum(1 for r in after if r.method.value in ("POST", "PUT", "PATCH", "DELETE"))
    return Row(size, approach, phase, statistics.median(seconds), mlflow_requests, kube_requests, kube_writes)


class NaiveRegistry(Registry):
    """Every registered model, then every version of each, filtered on the client."""

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(tracking_uri)
        self._naive = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def selected(self, selector: Selector, name: str | None = None) -> list[VersionInfo]:
        found = []
        names = [name] if name else [model.name for model in _paged(self._models_page)]
        for model_name in names:
            for version in _paged(functools.partial(self._versions_page, model_name)):
                if version.tags.get(selector.key) == selector.value and version.status == "READY":
                    found.append(VersionInfo(version.name, int(version.version), version.source,
                                             version.run_id or None, dict(version.tags)))
        return found

    def _models_page(self, token: str | None) -> Any:
        return self._naive.search_registered_models(max_results=1000, page_token=token)

    def _versions_page(self, name: str, token: str | None) -> Any:
        return self._naive.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)


def _paged(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def _markdown(rows: list[Row], selected: int) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        "## Reconcile",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `python -m bench.reconcile` on {os.cpu_count()} cores",
        f"({cpu}), Python {platform.python_version()}; one `mlflow server` (sqlite, one worker) per size,",
        f"{VERSIONS_EACH} versions per model, {selected} selected; kmock as the Kubernetes API. Requests counted",
        "at the peers: the MLflow server's access log and kmock's journal. Time: wall time of the whole pass",
        "(median of 3; one run at 100,000).",
        "",
        "| versions | approach | pass | time (s) | MLflow requests | Kubernetes requests | Kubernetes writes |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.size:,} | {r.approach} | {r.phase} | {r.seconds:.2f} | {r.mlflow:,} | {r.kubernetes} | "
              f"{r.kubernetes_writes} |" for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class FlatRow:
    deployed: int
    wall: float
    own: float
    mlflow: int
    kubernetes: int
    kubernetes_writes: int


def measure_deployed(counts: list[int]) -> int:
    """Steady-state passes over COUNT deployed models, each selected and running as the watcher left it.

    The registry holds COUNT models of one version each, selected and tagged deployed; kmock holds
    each one's Deployment, Service and Ingress exactly as the watcher renders them (created over its
    HTTP API before the measurement: deploying 1,000 models through passes would take most of an
    hour here). Then three passes with nothing to do, median reported. Own time = wall time less the
    time spent inside urllib3 (sending, waiting for and reading answers from MLflow and Kubernetes).
    """
    rows: list[FlatRow] = []
    s3, kube = LocalS3().start(), KubernetesPeer().start()
    try:
        source = _log_model_files(s3)
        for count in counts:
            rows.append(_flat(s3, kube, source, count))
            print(f"{count} deployed models measured", file=sys.stderr)
    finally:
        kube.stop()
        s3.stop()
    print(_flat_markdown(rows))
    return 0


def _flat(s3: LocalS3, kube: KubernetesPeer, source: str, count: int) -> FlatRow:
    server = LocalMlflow(s3)
    names = [f"model-{index:06d}" for index in range(count)]
    _seed_deployed(server.workdir / "mlflow.db", names, source)
    server.start(timeout=300)
    try:
        os.environ.update(server.client_env())
        deps = _deps(server, kube, f"flat-{count}")
        # The emulated controller runs in this process: its pods and ReplicaSets for 1,000 Deployments would
        # take the CPU from the pass being measured. A steady-state pass reads no rollout status.
        kube.pause_controller(True)
        for index, name in enumerate(names):
            if index % 50 == 0:
                _forget_requests(kube)
            release = Release(name=name, version=1, source=source, run_id=None, slug=model_slug(name))
            for manifest in deps.renderer.render(release).manifests:
                group = manifest["apiVersion"]  # "v1" is the core API's; the others are named groups
                kube.create("api/v1" if group == "v1" else f"apis/{group}", deps.settings.k8s_name_space, manifest)
        _forget_requests(kube)
        log = MlflowAccessLog(server.workdir / "server.log")
        namespace = deps.settings.k8s_name_space
        walls, owns = [], []
        for _ in range(3):
            log.mark()
            before = len(kube.requests(namespace))
            with _peer_time() as waited:
                started = time.perf_counter()
                report = reconcile_once(deps)
                wall = time.perf_counter() - started
            if (report.unchanged, report.failed) != (count, 0):
                raise RuntimeError(f"not a steady state at {count}: {report.summary()} {report.failures[:3]}")
            walls.append(wall)
            owns.append(wall - waited[0])
            after = kube.requests(namespace)[before:]
            mlflow_requests = len(log.since())
        writes = sum(1 for r in after if r.method.value in ("POST", "PUT", "PATCH", "DELETE"))
        return FlatRow(count, statistics.median(walls), statistics.median(owns), mlflow_requests, len(after), writes)
    finally:
        server.cleanup()


def _seed_deployed(db: Path, names: list[str], source: str) -> None:
    """One selected version per model, with the tags a successful pass leaves on it."""
    store = SqlAlchemyStore(f"sqlite:///{db}")
    now = int(time.time() * 1000)
    with store.ManagedSessionMaker() as session:
        session.execute(insert(SqlRegisteredModel),
                        [{"name": name, "creation_time": now, "last_updated_time": now} for name in names])
        session.execute(insert(SqlModelVersion), [
            {"name": name, "version": 1, "source": source, "storage_location": source, "creation_time": now,
             "last_updated_time": now, "current_stage": "None", "status": "READY"} for name in names])
        tags = {TAG[0]: TAG[1], "deployment_status": "deployed", "deployed": "true"}
        session.execute(insert(SqlModelVersionTag), [
            {"name": name, "version": 1, "key": key, "value": value}
            for name in names for key, value in {**tags, "deployment_name": model_slug(name)}.items()])
    store.engine.dispose()


def _forget_requests(kube: KubernetesPeer) -> None:
    """Empty kmock's request journal. kmock matches each request against its reactions by scanning
    every earlier request (kmock/_internal/apps.py, `request in payload._source`), so seeding
    thousands of objects was quadratic and the measured passes paid for the seeding's requests; a
    real API server keeps no such journal. The objects stay; only the bench counts the requests."""
    emulator = kube.emulator
    assert emulator is not None
    kube.call(emulator._requests.clear)


@contextlib.contextmanager
def _peer_time() -> Iterator[list[float]]:
    """Seconds spent in urllib3 (both clients use it) while the block runs: the peers' share of a pass."""
    spent = [0.0]
    depth = [0]
    originals = (urllib3.connectionpool.HTTPConnectionPool.urlopen, urllib3.response.HTTPResponse.read)

    def timed(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # a read inside urlopen is counted once
                    spent[0] += time.perf_counter() - started
        return wrapper

    urllib3.connectionpool.HTTPConnectionPool.urlopen = timed(originals[0])  # type: ignore[method-assign]
    urllib3.response.HTTPResponse.read = timed(originals[1])  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        urllib3.connectionpool.HTTPConnectionPool.urlopen, urllib3.response.HTTPResponse.read = originals  # type: ignore[method-assign]


def _flat_markdown(rows: list[FlatRow]) -> str:
    base = rows[0]
    lines = [f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m bench.reconcile --deployed "
             f"{','.join(str(r.deployed) for r in rows)}`, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f} after the run; median of 3 steady-state passes.", "",
             "| deployed models | wall (s) | own (s) | own over the first row, per added model (ms) | "
             "MLflow requests | Kubernetes requests | Kubernetes writes |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_model = (r.own - base.own) / (r.deployed - base.deployed) * 1000 if r.deployed != base.deployed else 0.0
        lines.append(f"| {r.deployed:,} | {r.wall:.3f} | {r.own:.3f} | {per_model:.3f} | {r.mlflow} | "
                     f"{r.kubernetes} | {r.kubernetes_writes} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
