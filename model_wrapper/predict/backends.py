"""The two ways a loaded model predicts: native scikit-learn on arrays, or MLflow pyfunc.

Built by `model_wrapper.loading.mlflow_loader` (which owns every MLflow import and hands in the `score`
function for the MLflow scoring protocol); called by the predictor on every request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from model_wrapper.predict.one_call import joint_predict
from model_wrapper.predict.predictor import Layout, Rows

if TYPE_CHECKING:
    import pandas as pd

Scorer = Callable[[bytes, str], tuple[int, bytes, str]]


class SklearnArrayBackend:
    """A numeric scikit-learn model called natively on an array.

    For a column signature pyfunc would build a DataFrame in signature order and let scikit-learn
    turn it into the very same float64 (or int64) array; for a tensor signature it hands over the
    array as given. Either way this builds that array directly, so the answers are identical and
    several times cheaper.
    """

    fast = True

    def __init__(self, estimator: Any, columns: list[str], dtype: np.dtype[Any], score: Scorer, *,
                 order: Literal["C", "F"] = "F") -> None:
        self.columns = columns
        self._predict = estimator.predict
        self._proba = estimator.predict_proba if has_probabilities(estimator) else None
        # Labels and probabilities from one scikit-learn call where that is exact (model_wrapper.predict.one_call).
        self._joint = joint_predict(estimator) if self._proba is not None else None
        self.classes: list[Any] | None = list(estimator.classes_) if self._proba is not None else None
        self._dtype = dtype
        self.layout: Layout | None = (np.dtype(dtype), order)
        """The array this backend builds: `predict` takes it ready-made too (predict/numeric_batch.py)."""
        # Column-major is how a DataFrame's values are laid out, row-major how MLflow parses a
        # tensor: BLAS sums in memory order, so only the same layout gives the same last bits.
        self._order = order
        self._score = score
        self.description = f"scikit-learn {type(estimator).__name__} (native predict on arrays)"

    def predict(self, rows: Rows, params: dict[str, Any] | None = None) -> tuple[Any, Any | None]:
        # No params: a model with a params schema is served by PyfuncBackend. Rows that already are
        # the array (`layout`) are taken as they are.
        features = np.asarray(rows, dtype=self._dtype, order=self._order)
        if self._joint is not None:
            return self._joint(features)
        predictions = self._predict(features)
        return predictions, (self._proba(features) if self._proba is not None else None)

    def invoke(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        return self._score(body, content_type)


class PyfuncBackend:
    """Any MLflow pyfunc model, fed what its signature takes: a DataFrame whose columns are in
    signature order (`frame_builder`), or a tensor (`model_wrapper.loading.mlflow_loader.tensor_builder`)."""

    fast = False
    layout: Layout | None = None

    def __init__(self, pyfunc: Any, columns: list[str], estimator: Any | None, score: Scorer, *,
                 to_input: Callable[[list[tuple[Any, ...]]], Any]) -> None:
        self.columns = columns
        self._pyfunc = pyfunc
        self._to_input = to_input
        self._proba = None
        self.classes: list[Any] | None = None
        if estimator is not None and has_probabilities(estimator):
            self._proba, self.classes = estimator.predict_proba, list(estimator.classes_)
        self._score = score
        flavors = [name for name in pyfunc.metadata.flavors if name != "python_function"]
        self.description = f"MLflow pyfunc ({', '.join(flavors) or 'python_function'})"

    def predict(self, rows: Rows, params: dict[str, Any] | None = None) -> tuple[Any, Any | None]:
        # No `layout`, so the predictor hands this backend tuples only.
        model_input = self._to_input(cast(list[tuple[Any, ...]], rows))
        predictions = _plain(self._pyfunc.predict(model_input, params=params))
        return predictions, (self._proba(model_input) if self._proba is not None else None)

    def invoke(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        return self._score(body, content_type)


def frame_builder(columns: list[str]) -> Callable[[list[tuple[Any, ...]]], pd.DataFrame]:
    """Rows as a DataFrame with the model's columns."""
    import pandas as pd  # here, not at the top: the array backend's cold start does without pandas

    return functools.partial(pd.DataFrame.from_records, columns=columns)


def has_probabilities(estimator: Any) -> bool:
    """A classifier that can say how sure it is (pipelines expose predict_proba only when able);
    scikit-learn's own estimators and those of its API (XGBoost, LightGBM, CatBoost)."""
    from sklearn.base import is_classifier

    if not (hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")):
        return False
    try:
        return bool(is_classifier(estimator)) or getattr(estimator, "_estimator_type", None) == "classifier"
    except Exception:  # an object scikit-learn cannot inspect is not one of its classifiers
        return getattr(estimator, "_estimator_type", None) == "classifier"


def _plain(predictions: Any) -> Any:
    import pandas as pd  # already imported by MLflow, which loaded this model
    if isinstance(predictions, pd.Series):
        return predictions.to_numpy()
    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    return predictions
