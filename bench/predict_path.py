"""Benchmark: where the time of one `predict` goes, in-process (no HTTP, no MLflow): the wrapper's own
work (validation, rows, labels, JSON) against the model's calls (`backend.predict`).

    python -m bench.predict_path [--rounds 7]

Serves the iris LogisticRegression with its contract through the same `Predictor` and array backend
the wrapper builds for it, and times `Predictor.predict_body` and `backend.predict` on the same
bodies, 1 and 100 instances, taking turns in each round; the best round counts (the least disturbed
by other work). Also the validation alone, to the model's array: the pydantic schema's rows made an
array, against the cheaper numeric validator (`model_wrapper.numeric_batch`, which leaves batches
under 8 instances to the schema: its figure at 1 is that hand-over). Prints a Markdown section for
BENCHMARKS.md. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
import warnings
from collections.abc import Callable

import numpy as np

from devstack.models import IRIS_CONTRACT, iris_frame, train_iris
from model_wrapper.contract.spec import parse_contract
from model_wrapper.predict.backends import SklearnArrayBackend
from model_wrapper.predict.predictor import LoadedModel, Predictor
from model_wrapper.predict.schema import RequestSchema


def _per_call(call: Callable[[], object], repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats * 1e6


def _schema_array(schema: RequestSchema, body: bytes) -> object:
    return np.array(schema.rows(body), dtype=np.float64, order="F")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    # As the wrapper does for a model it feeds arrays in the fitted column order (loading.py).
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
    features, _ = iris_frame()
    estimator = train_iris("logistic")
    backend = SklearnArrayBackend(estimator, [str(c) for c in estimator.feature_names_in_], np.dtype(np.float64),
                                  lambda body, content_type: (501, b"", "text/plain"))
    predictor = Predictor(name="iris", version="1", max_batch=1000)
    predictor.install(LoadedModel(contract=parse_contract(IRIS_CONTRACT.encode()), contract_origin="bench",
                                  backend=backend, run_id=None))
    predictor.warm_up()
    schema = predictor.schema
    assert schema is not None
    print(f"## Predict path, in-process ({time.strftime('%Y-%m-%d')}, `python -m bench.predict_path`)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f}. Best of {args.rounds} rounds.\n")
    print("| instances | predict_body (µs) | model calls (µs) | the wrapper's own (µs) | share "
          "| schema to array (µs) | numeric batch (µs) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    batch = predictor.batch
    for count, repeats in ((1, 2000), (100, 400)):
        body = json.dumps({"instances": features.iloc[:count].to_dict(orient="records")}).encode()
        rows = schema.rows(body)
        whole, model, schema_path, batch_path = [], [], [], []
        for _ in range(args.rounds):
            whole.append(_per_call(functools.partial(predictor.predict_body, body), repeats))
            model.append(_per_call(functools.partial(backend.predict, rows), repeats))
            schema_path.append(_per_call(functools.partial(_schema_array, schema, body), repeats))
            batch_path.append(_per_call(functools.partial(batch.array, body), repeats) if batch else float("nan"))
        own = min(whole) - min(model)
        print(f"| {count} | {min(whole):.0f} | {min(model):.0f} | {own:.0f} | {own / min(whole):.0%} "
              f"| {min(schema_path):.0f} | {min(batch_path):.0f} |")


if __name__ == "__main__":
    main()
