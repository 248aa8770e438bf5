"""A candidate that fails, logged as MLflow "models from code": the live version's iris classifier (logistic
regression on the iris data), except that it fails, an MLflow INTERNAL_ERROR and so a 5xx from the wrapper, on
every request with a sepal narrower than 2.8 cm: 22% of the iris rows. The contract's examples are wider, so it
starts and passes its smoke test."""

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.pyfunc import PythonModel
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class FlakyIris(PythonModel):
    def load_context(self, context):  # type: ignore[no-untyped-def]
        data = load_iris()
        self.model = LogisticRegression(max_iter=500).fit(data.data, data.target)

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if (model_input["sepal_width"] < 2.8).any():
            raise MlflowException("the flaky candidate fails on narrow sepals", error_code=INTERNAL_ERROR)
        return self.model.predict(model_input[FEATURES].to_numpy())


mlflow.models.set_model(FlakyIris())
