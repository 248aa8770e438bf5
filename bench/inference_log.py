"""Benchmark: what the inference log costs the wrapper, at sample 0, 0.1 and 1.0, in the same run.

    python -m bench.inference_log

Starts moto S3 and an MLflow server on loopback, logs the iris LogisticRegression with its contract,
and serves it with three wrapper processes (one worker each) that differ only in INFERENCE_LOG_SAMPLE;
the log goes to moto's S3 as it would to a bucket (default batching: 1,000 requests or 60 s). Under wrk
(1 thread, 8 connections), for 1 and for 100 instances per request, the three take turns in each of
ROUNDS rounds, so that other work on the machine weighs on all alike. The figure is the ratio to
sample 0 (the log off), round by round, as a median and its spread; beside wrk's figures, the CPU
time the wrapper process (all its threads) spent per request, which other work on the machine moves
less than it moves req/s, and that of its inference-log writer process. Then, in this process, what
the writer spends per logged request turning records into an Arrow table and a Parquet file.
`--conversion` runs only that part. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.wrapper import CONNECTIONS, INSTANCE, PIDS, Load, Server, _all_running, _stack, _under_load, in_turn
from devstack.servers import free_port

SAMPLES = ("0", "0.1", "1.0")
ROUNDS = 5


def main(argv: list[str] | None = None) -> int:
    if "--conversion" in (sys.argv[1:] if argv is None else argv):
        print(_conversion())
        return 0
    load_before = os.getloadavg()
    with _stack() as (mlflow_server, source, name, version, workdir):
        env = {**os.environ, **mlflow_server.client_env()}
        servers = [_wrapper(sample, source, name, version, workdir) for sample in SAMPLES]
        with _all_running(servers, env):
            loads = _loads(servers)
    print(_report(loads, load_before))
    print(_conversion())
    return 0


def _conversion(entries: int = 1000, tries: int = 3) -> str:
    """Microseconds per logged request: records to an Arrow table, then the table to Parquet as the log
    writes it, and as it did before (dictionary pages tried for every column); best of `tries`. The
    records hold what the predictor hands the log: each request's own random instances as the schema
    (small bodies) or the numeric batch (large ones) parsed them, and an answer of the iris model's shape."""
    import io
    import time

    import numpy as np
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    from devstack.models import IRIS_CONTRACT, IRIS_FEATURES
    from model_wrapper.contract.spec import parse_contract
    from model_wrapper.predict.inference_records import Entry, Layout, parquet_file, to_table
    from model_wrapper.predict.numeric_batch import numeric_batch
    from model_wrapper.predict.schema import build_schema

    contract = parse_contract(IRIS_CONTRACT.encode())
    layout = Layout.of("iris", "1", contract, IRIS_FEATURES)
    schema = build_schema(contract, IRIS_FEATURES, max_batch=1000, title="iris", classes=3)
    batch_parser = numeric_batch(contract, IRIS_FEATURES, max_batch=1000, dtype=np.dtype(np.float64), order="C")
    assert batch_parser is not None, "the iris contract's fields are all numbers"
    rng = np.random.default_rng(0)
    def plain(table: Any) -> bytes:  # the writer before: every column plain, with statistics
        buffer = io.BytesIO()
        pq.write_table(table.cast(pa.schema([(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                                              for f in table.schema])), buffer, compression="snappy",
                       use_dictionary=False)
        return buffer.getvalue()

    writers: dict[str, Callable[[Any], bytes]] = {"now": parquet_file, "before": plain}
    lines = ["", "| instances | rows as | to Arrow | to Parquet, now | to Parquet, before (plain) | bytes, now "
             "| bytes, before |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for size in (1, 100):
        batch, kind = [], ""
        for number in range(entries):
            values = np.round(rng.normal([5.8, 3.0, 3.8, 1.2], [0.8, 0.4, 1.8, 0.8], (size, 4)).clip(0.1, 9.9), 1)
            body = orjson.dumps({"instances": [dict(zip(IRIS_FEATURES, row, strict=True)) for row in values.tolist()]})
            array = batch_parser.array(body)
            kind = "array" if array is not None else "tuples"
            probabilities = rng.dirichlet([1, 1, 1], size)
            answer = {"predictions": probabilities.argmax(1), "probabilities": probabilities,
                      "labels": [("setosa", "versicolor", "virginica")[k] for k in probabilities.argmax(1)]}
            batch.append(Entry(f"{number:032x}", time.time(), "predict", 200, float(rng.random()),
                               array if array is not None else schema.rows(body), answer))
        best = dict.fromkeys(["table", *writers], float("inf"))
        sizes = {}
        for _ in range(tries):
            started = time.perf_counter()
            table = to_table(batch, layout)
            best["table"] = min(best["table"], time.perf_counter() - started)
            for name, write in writers.items():
                started = time.perf_counter()
                size_of = len(write(table))
                best[name], sizes[name] = min(best[name], time.perf_counter() - started), size_of
        us = {name: f"{seconds / entries * 1e6:.0f} us" for name, seconds in best.items()}
        lines.append(f"| {size} | {kind} | {us['table']} | {us['now']} | {us['before']} | "
                     f"{sizes['now'] / entries:,.0f} | {sizes['before'] / entries:,.0f} |")
    return "\n".join(lines)


def _wrapper(sample: str, source: str, name: str, version: str, workdir: Path) -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}/{name}/api"
    return Server(sample, [sys.executable, "-m", "model_wrapper"], f"{base}/ready",
                  {"predict": (f"{base}/predict", lambda n: {"instances": [INSTANCE] * n})},
                  env={"MODEL_NAME": name, "MODEL_VERSION": version, "MODEL_SOURCE": source, "PORT": str(port),
                       "HOST": "127.0.0.1", "TERMINATION_LOG": str(workdir / f"termination-log-{sample}"),
                       "INFERENCE_LOG_SAMPLE": sample, "INFERENCE_LOG_PREFIX": f"bench-log-{sample}",
                       "DRAIN_SECONDS": "0"},
                  settle=(f"{base}/invocations", {"dataframe_records": [INSTANCE]}))


def _loads(servers: list[Server]) -> dict[tuple[str, int], list[Load]]:
    """Every round's figures per (sample, instances); in each round the servers take turns, each round
    starting with the next (`in_turn`), so a round's ratios compare trials a few seconds apart."""
    rounds: dict[tuple[str, int], list[Load]] = {}
    for size in (1, 100):
        for number in range(ROUNDS):
            for server in in_turn(servers, number):
                url, body = server.endpoints["predict"]
                rounds.setdefault((server.name, size), []).append(_under_load(url, body(size), PIDS[server.name]))
    return rounds


def _report(loads: dict[tuple[str, int], list[Load]], load_before: tuple[float, float, float]) -> str:
    from bench.wrapper import DURATION, WARM_UP, _median, _spread

    lines = [f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average (1 min) "
             f"{load_before[0]:.1f} before and {os.getloadavg()[0]:.1f} after. wrk -t1 -c{CONNECTIONS} "
             f"-d{DURATION}s after a {WARM_UP}s warm-up; one worker each; {ROUNDS} rounds. Ratios to sample 0 "
             "round by round: median (lowest to highest).", "",
             "| sample | instances | req/s (median) | p99 ms (median) | CPU us/request (median) "
             "| writer's CPU us/request (median) | req/s vs sample 0 | p99 vs sample 0 | CPU/request vs sample 0 "
             "| with the writer's | non-2xx |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in (1, 100):
        off = loads[(SAMPLES[0], size)]
        for sample in SAMPLES:
            runs = loads[(sample, size)]
            rps = [a.rps / b.rps for a, b in zip(runs, off, strict=True)]
            p99 = [a.p99_ms / b.p99_ms for a, b in zip(runs, off, strict=True)]
            cpu = [(a.cpu_us or 0) / (b.cpu_us or 1) for a, b in zip(runs, off, strict=True)]
            pair = [((a.cpu_us or 0) + (a.children_cpu_us or 0)) / ((b.cpu_us or 1) + (b.children_cpu_us or 0))
                    for a, b in zip(runs, off, strict=True)]
            lines.append(f"| {sample} | {size} | {_median(r.rps for r in runs):,.0f} | "
                         f"{_median(r.p99_ms for r in runs):.2f} | {_median(r.cpu_us or 0 for r in runs):.0f} | "
                         f"{_median(r.children_cpu_us or 0 for r in runs):.0f} | "
                         f"{_spread(rps, '')} | {_spread(p99, '')} | {_spread(cpu, '')} | {_spread(pair, '')} | "
                         f"{sum(r.errors for r in runs)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
