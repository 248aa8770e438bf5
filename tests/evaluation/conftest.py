"""Fixtures for the evaluation gate: iris models logged with test data, good and bad, once a session.

The watcher fixtures (settings and deps against the session's peers) are the reconcile tests' own.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from devstack.models import IRIS_CONTRACT, LoggedModel, iris_frame, log_sklearn_model
from devstack.servers import LocalMlflow
from tests.reconcile.conftest import _controller_resets, make_deps, make_settings, upload  # noqa: F401
from tests.reconcile.test_local_target import local_deps, state_dir  # noqa: F401

LABELS = ["setosa", "versicolor", "virginica"]
GATE = """\
evaluation:
  data: evaluation.csv
  target: species
  metrics:
    accuracy: {min: 0.90}
    f1_macro: {min: 0.85}
"""


def iris_table(*, names: bool = True) -> pd.DataFrame:
    """The iris data with its truth: species names (as `labels` spells them) or class indices."""
    features, target = iris_frame()
    return features.assign(species=[LABELS[t] for t in target] if names else target)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def shuffled_model() -> Any:
    """A model that learnt nothing: trained on the iris labels in random order."""
    features, target = iris_frame()
    return LogisticRegression(max_iter=500).fit(features, np.random.default_rng(7).permutation(target))


def good_model() -> Any:
    features, target = iris_frame()
    return LogisticRegression(max_iter=500).fit(features, target)


def log_gated(name: str, model: Any, *, gate: str = GATE, data: dict[str, bytes] | None = None,
              **kwargs: Any) -> LoggedModel:
    """Log `model` with the iris contract plus `gate`, and the evaluation data beside the contract."""
    features, _ = iris_frame()
    files = {"evaluation.csv": csv_bytes(iris_table())} if data is None else data
    return log_sklearn_model(name, model, features, contract=IRIS_CONTRACT + gate, files=files,
                             pip_requirements=["scikit-learn"], **kwargs)


@pytest.fixture(scope="session")
def good_iris(mlflow_server: LocalMlflow) -> LoggedModel:
    return log_gated("gated-iris-good", good_model())


@pytest.fixture(scope="session")
def bad_iris(mlflow_server: LocalMlflow) -> LoggedModel:
    return log_gated("gated-iris-shuffled", shuffled_model())


@pytest.fixture(scope="session")
def run_evaluate(mlflow_server: LocalMlflow) -> Callable[..., dict[str, Any]]:
    """`python -m model_wrapper evaluate` in a process, as the Job runs it; its one JSON line, parsed."""
    import json

    def run(logged: LoggedModel, *args: str, **env: str) -> dict[str, Any]:
        environ = {**os.environ, **mlflow_server.client_env(), "MODEL_NAME": logged.name,
                   "MODEL_VERSION": logged.version, "MODEL_SOURCE": logged.source, "MODEL_RUN_ID": logged.run_id,
                   "TERMINATION_LOG": os.devnull, **env}
        done = subprocess.run([sys.executable, "-m", "model_wrapper", "evaluate", *args], env=environ,
                              capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    return run


@pytest.fixture
def variant(mlflow_server: LocalMlflow) -> Callable[..., str]:
    """Register a version of `name` whose files are `logged`'s, copied to a fresh S3 prefix with
    `files` replaced (a contract, the evaluation data), as a researcher re-logging with other files.
    Its source is that s3:// prefix: the wrapper and the Job load it from there."""
    import uuid

    import boto3
    from mlflow import MlflowClient

    s3 = boto3.client("s3", endpoint_url=mlflow_server.s3.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="devstack-key", aws_secret_access_key="devstack-secret")

    def make(name: str, logged: LoggedModel, files: dict[str, bytes], tags: dict[str, str]) -> str:
        client = MlflowClient()
        source = client.get_model_version_download_uri(logged.name, logged.version).rstrip("/")
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        target = f"variants/{uuid.uuid4().hex}"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) + 1:]
                if relative not in files:
                    s3.copy_object(Bucket=bucket, Key=f"{target}/{relative}",
                                   CopySource={"Bucket": bucket, "Key": item["Key"]})
        for relative, content in files.items():
            s3.put_object(Bucket=bucket, Key=f"{target}/{relative}", Body=content)
        if not client.search_registered_models(f"name = '{name}'", max_results=1):
            client.create_registered_model(name)
        return str(client.create_model_version(name, f"s3://{bucket}/{target}", tags=tags,
                                               await_creation_for=0).version)

    return make
