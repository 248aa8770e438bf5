"""Models the wrapper tests log to the session's MLflow server.

Like `devstack.models.log_sklearn_model`, but with the pip requirements given rather than
inferred: MLflow infers them by loading the model in a subprocess, which costs ~10 s per model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import sklearn
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT, LoggedModel, iris_frame, train_iris

REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}"]


def log_model(name: str, model: Any, example: pd.DataFrame, *, contract: str | None = None,
              signature: bool = True, run_contract: str | None = None) -> LoggedModel:
    """Log and register `model`, with `contract` among its files and/or `run_contract` in the run."""
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run() as run:
        extra_files = []
        if contract is not None:
            extra_files.append(_write(Path(tmp) / "contract.yaml", contract))
        if run_contract is not None:
            mlflow.log_artifact(_write(Path(tmp) / "run" / "contract.yaml", run_contract))
        mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name, input_example=example.head(2) if signature else None,
            signature=None if signature else False, extra_files=extra_files or None, pip_requirements=REQUIREMENTS,
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    versions = MlflowClient().search_model_versions(f"name = '{name}' AND run_id = '{run.info.run_id}'")
    version = max(versions, key=lambda v: int(v.version))
    return LoggedModel(name=name, version=str(version.version), source=version.source, run_id=run.info.run_id,
                       model=model)


def log_iris_model(name: str, *, kind: str = "logistic", contract: str | None = IRIS_CONTRACT,
                   **kwargs: Any) -> LoggedModel:
    features, _ = iris_frame()
    return log_model(name, train_iris(kind), features, contract=contract, **kwargs)


def _write(path: Path, content: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return str(path)
