"""Example models for the demo and the tests: small sklearn models logged with a contract.

Everything is trained on data that ships with scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import RestException
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_CONTRACT = """\
title: Iris species
description: Predicts the iris species from flower measurements (cm).
task: classification
inputs:
  sepal_length: {type: number, description: Sepal length in cm, minimum: 0, example: 5.1}
  sepal_width:  {type: number, description: Sepal width in cm, minimum: 0, example: 3.5}
  petal_length: {type: number, description: Petal length in cm, minimum: 0, example: 1.4}
  petal_width:  {type: number, description: Petal width in cm, minimum: 0, example: 0.2}
outputs:
  prediction: {type: integer, description: Class index}
labels: [setosa, versicolor, virginica]
examples:
  - {sepal_length: 5.1, sepal_width: 3.5, petal_length: 1.4, petal_width: 0.2}
  - {sepal_length: 6.7, sepal_width: 3.0, petal_length: 5.2, petal_width: 2.3}
"""


@dataclass(frozen=True)
class LoggedModel:
    name: str
    version: str
    source: str
    run_id: str
    model: Any


def iris_frame() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_iris()
    return pd.DataFrame(data.data, columns=IRIS_FEATURES), data.target


def train_iris(kind: str = "logistic") -> Any:
    features, target = iris_frame()
    model = DecisionTreeClassifier(max_depth=3, random_state=0) if kind == "tree" else LogisticRegression(max_iter=500)
    return model.fit(features, target)


def train_diabetes() -> tuple[Any, pd.DataFrame]:
    data = load_diabetes(as_frame=True)
    return LinearRegression().fit(data.data, data.target), data.data


def log_sklearn_model(
    name: str,
    model: Any,
    example: pd.DataFrame | np.ndarray,
    *,
    contract: str | bytes | None = IRIS_CONTRACT,
    signature: bool = True,
    run_contract: str | bytes | None = None,
    tags: dict[str, str] | None = None,
    pip_requirements: list[str] | None = None,
    files: dict[str, bytes] | None = None,
    run_files: dict[str, bytes] | None = None,
) -> LoggedModel:
    """Log `model` (with `contract.yaml` among its files), register it as `name` and tag the version.

    `run_contract` puts a contract in the run's artifacts instead, the other place the watcher looks.
    A NumPy `example` gives the model a tensor signature, as for a model trained on arrays.
    Given `pip_requirements`, MLflow skips inferring them (which loads the model in a subprocess).
    `files` go beside the model's contract (e.g. evaluation data), `run_files` beside the run's.
    """
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run() as run:
        extra_files = []
        if contract is not None:
            extra_files.append(_write(Path(tmp) / "contract.yaml", contract))
        extra_files += [_write(Path(tmp) / name, content) for name, content in (files or {}).items()]
        if run_contract is not None:
            mlflow.log_artifact(_write(Path(tmp) / "run" / "contract.yaml", run_contract))
        for file_name, content in (run_files or {}).items():  # not `name`: that is the model's
            mlflow.log_artifact(_write(Path(tmp) / "run" / file_name, content))
        mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name,
            input_example=example[:2] if signature else None,
            signature=None if signature else False,
            extra_files=extra_files or None, pip_requirements=pip_requirements,
            skops_trusted_types=["sklearn.tree._tree.Tree", "numpy.dtype"],  # trees; imputers keep a dtype
        )
    version = _latest_version(name, run.info.run_id)
    client = MlflowClient()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version.version, key, value)
    return LoggedModel(name=name, version=str(version.version),
                       source=version.source or f"models:/{name}/{version.version}",
                       run_id=run.info.run_id, model=model)


def log_iris(name: str, *, kind: str = "logistic", tags: dict[str, str] | None = None, **kwargs: Any) -> LoggedModel:
    features, _ = iris_frame()
    return log_sklearn_model(name, train_iris(kind), features, tags=tags, **kwargs)


def register_versions(name: str, logged: LoggedModel, count: int = 1, *, tags: dict[str, str] | None = None,
                      client: MlflowClient | None = None) -> list[str]:
    """Register `count` new versions of `name` that serve `logged`'s files (milliseconds each, no training).

    The registry then holds many versions cheaply: each is a real version with the logged model's
    source, contract and run, as if a researcher had registered the same model again.
    """
    client = client or MlflowClient()
    try:
        client.get_registered_model(name)  # by name, not in a filter: any name MLflow registers, quotes too
    except RestException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name)
    model_id = logged.source.removeprefix("models:/") if logged.source.startswith("models:/") else None
    return [str(client.create_model_version(name, logged.source, logged.run_id, tags=tags, model_id=model_id,
                                            await_creation_for=0).version) for _ in range(count)]


def _write(path: Path, content: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _latest_version(name: str, run_id: str) -> ModelVersion:
    # The run's versions, then the name's: a filter cannot hold a name with both kinds of quote.
    versions = MlflowClient().search_model_versions(f"run_id = '{run_id}'")
    return max((v for v in versions if v.name == name), key=lambda v: int(v.version))
