"""A custom pyfunc model for the conformance suite, logged as MLflow "models from code" (no pickle)
under several signatures. Its answer shows what MLflow handed it, so that two servers agree only
if they parsed the request alike:

- a DataFrame: one string per row naming each column's dtype and value;
- one tensor: the sum of each instance (a string tensor: its values joined); several named tensors:
  the sum of every tensor's instance;
- params `scale` and `mode`: predictions times `scale`; `mode` makes it fail on purpose
  (`internal`: an MlflowException INTERNAL_ERROR; `value`: a ValueError; `unserialisable`: an
  answer that is not JSON), and so does a negative `x`, the case of a model that rejects some input.
"""

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        params = params or {}
        mode = params.get("mode", "ok")
        if mode == "internal":
            raise MlflowException("the feature store is unreachable", error_code=INTERNAL_ERROR)
        if mode == "value":
            raise ValueError("mode 'value' asks this model to fail")
        if isinstance(model_input, pd.DataFrame):
            if "x" in model_input and (model_input["x"] < 0).any():
                raise ValueError(f"x must not be negative, got {model_input['x'].min()}")
            answer: Any = _describe_rows(model_input) if "x" not in model_input else \
                (model_input["x"] * params.get("scale", 1.0)).tolist()
        elif isinstance(model_input, dict):
            answer = sum(np.asarray(value).reshape(len(value), -1).sum(axis=1) for value in model_input.values())
        elif np.asarray(model_input).dtype.kind in "USO":  # a string tensor: each instance's values joined
            answer = ["|".join(map(str, np.asarray(row).ravel())) for row in model_input]
        else:
            answer = np.asarray(model_input).reshape(len(model_input), -1).sum(axis=1)
        if mode == "unserialisable":
            return [object() for _ in range(len(model_input))]
        return answer


def _describe_rows(frame: pd.DataFrame) -> list[str]:
    return ["; ".join(f"{name}={frame[name].dtype}:{row[name]!r}" for name in frame.columns)
            for _, row in frame.iterrows()]


mlflow.models.set_model(Echo())
