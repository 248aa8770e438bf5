"""Labels and probabilities from one scikit-learn call, for the estimators where that is exact.

Used by `model_wrapper.predict.backends.SklearnArrayBackend`. Each scikit-learn call validates its input
again (most of a small request's model time), so where scikit-learn's own `predict` is computed
from the same intermediate as `predict_proba`, this computes that intermediate once and finishes
both answers the way scikit-learn's code does (scikit-learn 1.9, `sklearn/...` files cited below).
Anything else gets None and keeps both calls. `tests/wrapper/test_one_call.py` compares every
case with the two calls bit for bit, ties included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Joint = Callable[[Any], tuple[Any, Any]]


def joint_predict(estimator: Any) -> Joint | None:
    """`features -> (predict(features), predict_proba(features))` in one call, or None."""
    from sklearn.pipeline import Pipeline

    if type(estimator) is Pipeline:
        return _pipeline(estimator)
    return _final(estimator)


def _final(estimator: Any) -> Joint | None:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    kind = type(estimator)
    if kind is LogisticRegression:
        return _logistic(estimator)
    # ensemble/_forest.py ForestClassifier.predict (one output) and calibration.py
    # CalibratedClassifierCV.predict: classes_ taken at argmax(predict_proba(X), axis=1).
    if (kind in (RandomForestClassifier, ExtraTreesClassifier) and estimator.n_outputs_ == 1) \
            or kind is CalibratedClassifierCV:
        return _argmax_of_probabilities(estimator)
    return None


def _argmax_of_probabilities(estimator: Any) -> Joint:
    proba, classes = estimator.predict_proba, estimator.classes_

    def joint(features: Any) -> tuple[Any, Any]:
        probabilities = proba(features)
        return classes[np.argmax(probabilities, axis=1)], probabilities

    return joint


def _logistic(estimator: Any) -> Joint:
    """linear_model/_base.py LinearClassifierMixin.predict (argmax of the decision, or decision > 0
    for two classes) and linear_model/_logistic.py predict_proba (softmax of the same decision, or
    `_predict_proba_lr`: expit, stacked as [1 - p, p])."""
    from scipy.special import expit
    from sklearn.utils.extmath import softmax

    decision, classes = estimator.decision_function, estimator.classes_
    binary = classes.size <= 2

    def joint(features: Any) -> tuple[Any, Any]:
        scores = decision(features)
        if binary:
            labels = classes.take((scores > 0).astype(np.intp), axis=0)
            positive = expit(scores, out=scores)
            return labels, np.stack([1 - positive, positive], axis=1)
        labels = classes.take(np.argmax(scores, axis=1), axis=0)
        return labels, softmax(scores, copy=False)

    return joint


def _pipeline(pipeline: Any) -> Joint | None:
    """pipeline.py Pipeline.predict and predict_proba: the same transforms, then the last step's."""
    last = _final(pipeline._final_estimator) if pipeline._final_estimator not in (None, "passthrough") else None
    if last is None:
        return None
    transforms = [step.transform for _, _, step in pipeline._iter(with_final=False)]

    def joint(features: Any) -> tuple[Any, Any]:
        for transform in transforms:
            features = transform(features)
        return last(features)

    return joint
