"""Benchmark: where the time of one `predict` goes, in-process (no HTTP, no MLflow): the wrapper's own
work (validation, rows, labels, JSON) against the model's calls (`backend.predict`).

    python -m bench.predict_path [--rounds 7]

Serves the iris LogisticRegression with its contract through the same `Predictor` and array backend
the wrapper builds for it, and times `Predictor.predict_body` and `backend.predict` on the same
bodies, 1 and 100 instances, taking turns in each round; the best round counts (the least disturbed
by other work). Prints a Markdown section for BENCHMARKS.md. Not a test: nothing here asserts a time.
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


def _per_call(call: Callable[[], object], repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats * 1e6


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
    print("| instances | predict_body (µs) | model calls (µs) | the wrapper's own (µs) | share |")
    print("|---:|---:|---:|---:|---:|")
    for count, repeats in ((1, 2000), (100, 400)):
        body = json.dumps({"instances": features.iloc[:count].to_dict(orient="records")}).encode()
        rows = schema.rows(body)
        whole, model = [], []
        for _ in range(args.rounds):
            whole.append(_per_call(functools.partial(predictor.predict_body, body), repeats))
            model.append(_per_call(functools.partial(backend.predict, rows), repeats))
        own = min(whole) - min(model)
        print(f"| {count} | {min(whole):.0f} | {min(model):.0f} | {own:.0f} | {own / min(whole):.0%} |")


if __name__ == "__main__":
    main()
