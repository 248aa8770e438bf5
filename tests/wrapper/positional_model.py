"""A tensor model for the wrapper tests, logged as MLflow "models from code" (no pickle): its
answer tells which value sat where in the row, 1 * the first + 10 * the second + 100 * the third."""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class PositionalSum(PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return np.asarray(model_input, dtype=np.float64) @ np.array([1.0, 10.0, 100.0])


mlflow.models.set_model(PositionalSum())
