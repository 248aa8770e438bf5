"""One scikit-learn call for labels and probabilities gives what `predict` and `predict_proba` give.

Each estimator family the shortcut covers is compared, bit for bit, with scikit-learn's two calls
on random inputs, including inputs built to tie (equal class scores, a decision of exactly zero,
forests whose trees split their votes); the families it does not cover are shown to keep two calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from model_wrapper.predict.backends import SklearnArrayBackend
from model_wrapper.predict.one_call import joint_predict

IRIS = load_iris()
CANCER = load_breast_cancer()


def _tied_logistic() -> LogisticRegression:
    """Classes 1 and 2 given the very same coefficients: every row's scores tie between them."""
    model = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    model.coef_[2], model.intercept_[2] = model.coef_[1], model.intercept_[1]
    return model


def _zero_decision_binary() -> LogisticRegression:
    """A decision of exactly 0 for every row: `predict` says the first class, probabilities tie."""
    model = LogisticRegression(max_iter=5000).fit(CANCER.data[:, :4], CANCER.target)
    model.coef_[:], model.intercept_[:] = 0.0, 0.0
    return model


COVERED: dict[str, tuple[Callable[[], Any], Any]] = {
    "multiclass logistic": (lambda: LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target), IRIS.data),
    "logistic with tied classes": (_tied_logistic, IRIS.data),
    "string classes": (lambda: LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target_names[IRIS.target]),
                       IRIS.data),
    "binary logistic": (lambda: LogisticRegression(max_iter=5000).fit(CANCER.data[:, :4], CANCER.target),
                        CANCER.data[:, :4]),
    "binary logistic, zero decision": (_zero_decision_binary, CANCER.data[:, :4]),
    "forest of two trees (split votes)": (lambda: RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0)
                                          .fit(IRIS.data, IRIS.target), IRIS.data),
    "extra trees": (lambda: ExtraTreesClassifier(n_estimators=4, random_state=0).fit(IRIS.data, IRIS.target),
                    IRIS.data),
    "calibrated": (lambda: CalibratedClassifierCV(LogisticRegression(max_iter=500), cv=3).fit(IRIS.data, IRIS.target),
                   IRIS.data),
    "scaled pipeline": (lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
                        .fit(IRIS.data, IRIS.target), IRIS.data),
    "pipeline with passthrough": (lambda: Pipeline([("nothing", "passthrough"), ("forest", RandomForestClassifier(
        n_estimators=3, random_state=1))]).fit(IRIS.data, IRIS.target), IRIS.data),
}
NOT_COVERED: dict[str, Callable[[], Any]] = {
    "naive Bayes": lambda: GaussianNB().fit(IRIS.data, IRIS.target),
    "tree": lambda: DecisionTreeClassifier(max_depth=3).fit(IRIS.data, IRIS.target),
    "histogram boosting": lambda: HistGradientBoostingClassifier(max_iter=5).fit(IRIS.data, IRIS.target),
    "SVC": lambda: SVC(probability=True, random_state=0).fit(IRIS.data, IRIS.target),
    "pipeline ending in naive Bayes": lambda: make_pipeline(StandardScaler(), GaussianNB()).fit(IRIS.data, IRIS.target),
    "a subclass of a covered one": lambda: type("MyLogistic", (LogisticRegression,), {})(max_iter=500).fit(
        IRIS.data, IRIS.target),
}


def _inputs(data: Any, seed: int) -> list[np.ndarray]:
    """The data itself, random rows around it, far outside it (saturated probabilities), and
    repeated or constant rows."""
    rng = np.random.default_rng(seed)
    spread = data.std(axis=0)
    around = data.mean(axis=0) + rng.normal(size=(500, data.shape[1])) * spread * 2
    far = rng.normal(size=(200, data.shape[1])) * spread * 1e3
    constant = np.zeros((20, data.shape[1]))
    return [np.asarray(data, dtype=np.float64), around, far, constant, np.repeat(data[:3], 4, axis=0),
            np.asfortranarray(around)]


def _same(left: np.ndarray, right: np.ndarray) -> bool:
    return left.dtype == right.dtype and left.shape == right.shape and left.tobytes() == right.tobytes()


@pytest.mark.parametrize("case", list(COVERED))
def test_one_call_answers_bit_for_bit_as_predict_and_predict_proba(case: str) -> None:
    build, data = COVERED[case]
    model = build()
    joint = joint_predict(model)
    assert joint is not None, f"{case} should take the one-call path"
    for features in _inputs(data, seed=len(case)):
        labels, probabilities = joint(features.copy(order="K"))
        assert _same(labels, model.predict(features)), case
        assert _same(probabilities, model.predict_proba(features)), case


def test_the_tie_cases_really_tie() -> None:
    """The tie models above would prove nothing if their inputs never tied."""
    tied = _tied_logistic()
    assert np.all(tied.decision_function(IRIS.data)[:, 1] == tied.decision_function(IRIS.data)[:, 2])
    zero = _zero_decision_binary()
    assert set(zero.predict(CANCER.data[:, :4])) == {zero.classes_[0]}
    forest = COVERED["forest of two trees (split votes)"][0]()
    assert np.any(forest.predict_proba(_inputs(IRIS.data, 0)[1]).max(axis=1) == 0.5)


@pytest.mark.parametrize("case", list(NOT_COVERED))
def test_other_classifiers_keep_two_calls(case: str) -> None:
    assert joint_predict(NOT_COVERED[case]()) is None


def test_the_array_backend_answers_as_the_two_calls() -> None:
    model = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    columns = [f"x{i}" for i in range(4)]
    backend = SklearnArrayBackend(model, columns, np.dtype(np.float64), lambda body, kind: (500, b"", ""))
    rows = [tuple(row) for row in _inputs(IRIS.data, 3)[1].tolist()]
    labels, probabilities = backend.predict(rows)
    features = np.array(rows, dtype=np.float64, order="F")
    assert _same(labels, model.predict(features)) and _same(probabilities, model.predict_proba(features))
