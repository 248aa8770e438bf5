"""Benchmark: where the wrapper's fetch of a small scikit-learn model from MLflow and S3 goes, step by step.

    python -m bench.fetch [--trials 5]

Starts moto S3 and an MLflow server on loopback, logs the iris LogisticRegression with its contract,
then, in fresh interpreters (one per trial, so every import is paid as a pod pays it), takes the
steps `model_wrapper.loading.sklearn_loader.load_fast` takes before it reads the files: the MLflow
REST call for the logged model's location, boto3's import, its S3 client, the listing, and the GETs.
Prints seconds per step and trial. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime

from bench.wrapper import _stack

STEPS = r"""
import os, tempfile, time
from pathlib import Path
from model_wrapper.config.settings import load_settings
from model_wrapper.loading import sklearn_loader as loader
settings = load_settings(dict(os.environ))
marks = [("start", time.perf_counter())]
location = loader.artifact_location(settings.model_source, settings.mlflow_tracking_uri)
marks.append(("REST: the logged model", time.perf_counter()))
import boto3
marks.append(("import boto3", time.perf_counter()))
s3 = loader._s3_client(settings)
marks.append(("S3 client", time.perf_counter()))
files = loader._listing(s3, location)
marks.append(("listing", time.perf_counter()))
loader._fetch(s3, location, files, files, Path(tempfile.mkdtemp()))
marks.append((f"GET {len(files)} files", time.perf_counter()))
print(" | ".join(f"{name} {end - start:.3f}" for (_, start), (name, end) in zip(marks, marks[1:]))
      + f" | total {marks[-1][1] - marks[0][1]:.3f}")
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with _stack() as (mlflow_server, source, name, version, _):
        env = {**os.environ, **mlflow_server.client_env(), "MODEL_NAME": name, "MODEL_VERSION": version,
               "MODEL_SOURCE": source}
        lines = [subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True,
                                check=True).stdout.strip() for _ in range(args.trials)]
    print(f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average (1 min) {load_before:.1f} before and "
          f"{os.getloadavg()[0]:.1f} after; seconds per step, one fresh interpreter per trial:")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
