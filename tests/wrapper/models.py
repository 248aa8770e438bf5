"""Models the wrapper tests log to the session's MLflow server.

Like `devstack.models.log_sklearn_model`, but with the pip requirements given rather than
inferred: MLflow infers them by loading the model in a subprocess, which costs ~10 s per model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sklearn

from devstack.models import IRIS_CONTRACT, LoggedModel, iris_frame, log_sklearn_model, train_iris

REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}"]


def log_model(name: str, model: Any, example: pd.DataFrame | np.ndarray, *, contract: str | None = None,
              signature: bool = True, run_contract: str | None = None) -> LoggedModel:
    """Log and register `model`, with `contract` among its files and/or `run_contract` in the run."""
    return log_sklearn_model(name, model, example, contract=contract, signature=signature,
                             run_contract=run_contract, pip_requirements=REQUIREMENTS)


def log_iris_model(name: str, *, kind: str = "logistic", contract: str | None = IRIS_CONTRACT,
                   **kwargs: Any) -> LoggedModel:
    features, _ = iris_frame()
    return log_model(name, train_iris(kind), features, contract=contract, **kwargs)
