"""The gate's pure parts, table-tested: the strict `evaluation` section, the verdict and its
messages, and batched scoring, whose every figure must equal scikit-learn's on the whole data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from devstack.models import IRIS_CONTRACT
from model_wrapper.contract.evaluation import Evaluation, Figures, verdict
from model_wrapper.contract.spec import ContractError, parse_contract
from model_wrapper.evaluate.scoring import DataProblem, Tally, check_columns, read_batches
from tests.evaluation.conftest import GATE, csv_bytes, iris_table, parquet_bytes

REGRESSION = "task: regression\ninputs:\n  x: {type: number}\n"


@pytest.mark.parametrize(("section", "named"), [
    ("  data: e.csv\n  target: species\n  metrics: {acuracy: {min: 0.9}}", "unknown metric 'acuracy'"),
    ("  data: e.csv\n  target: species\n  metrics: {rmse: {max: 1}}", "rmse is a regression metric"),
    ("  data: e.csv\n  target: sepal_width\n  metrics: {accuracy: {min: 0.9}}", "'sepal_width' is also one of"),
    ("  data: e.xlsx\n  target: species\n  metrics: {accuracy: {min: 0.9}}", "neither .csv nor .parquet"),
    ("  data: ../other/e.csv\n  target: species\n  metrics: {accuracy: {min: 0.9}}", "no '..'"),
    ("  data: e.csv\n  target: species\n  metrics: {accuracy: {}}", "give min, max or both"),
    ("  data: e.csv\n  target: species\n  metrics: {accuracy: {min: .nan}}", "finite"),
    ("  data: e.csv\n  target: species\n  metrics: {accuracy: {min: 0.9, max: 0.5}}", "greater than max"),
    ("  data: e.csv\n  target: species", "give metrics"),
    ("  data: e.csv\n  target: species\n  compare_with_live: {metric: f1}", "unknown metric 'f1'"),
    ("  data: e.csv\n  target: species\n  compare_with_live: {metric: accuracy, max_drop: -1}", "max_drop"),
    ("  data: e.csv\n  target: species\n  metrics: {accuracy: {minimum: 0.9}}", "unknown key"),
    ("  data: e.csv\n  target: species\n  metric: {accuracy: {min: 0.9}}", "evaluation.metric: unknown key"),
])
def test_a_wrong_evaluation_section_is_a_contract_error_naming_it(section: str, named: str) -> None:
    with pytest.raises(ContractError, match=r"contract\.yaml is invalid") as caught:
        parse_contract((IRIS_CONTRACT + "evaluation:\n" + section + "\n").encode())
    assert named in str(caught.value)


def test_the_task_must_be_one_the_metrics_measure() -> None:
    with pytest.raises(ContractError, match="needs task: classification or regression"):
        parse_contract(b"inputs:\n  x: {type: number}\nevaluation: {data: e.csv, target: y, metrics: {r2: {min: 0}}}")
    with pytest.raises(ContractError, match="accuracy is a classification metric; this task is regression"):
        parse_contract((REGRESSION + "evaluation: {data: e.csv, target: y, metrics: {accuracy: {min: 0}}}").encode())


def test_a_contract_without_the_section_has_none() -> None:
    assert parse_contract(IRIS_CONTRACT.encode()).evaluation is None
    assert parse_contract((IRIS_CONTRACT + GATE).encode()).evaluation == Evaluation.model_validate({
        "data": "evaluation.csv", "target": "species",
        "metrics": {"accuracy": {"min": 0.9}, "f1_macro": {"min": 0.85}}})


GATED = Evaluation.model_validate({"data": "evaluation.csv", "target": "species",
                                   "metrics": {"accuracy": {"min": 0.90}, "log_loss": {"max": 0.5}},
                                   "compare_with_live": {"metric": "accuracy", "max_drop": 0.01}})


@pytest.mark.parametrize(("metrics", "live", "passed", "message"), [
    ({"accuracy": 0.953, "log_loss": 0.2}, None, True, ""),
    ({"accuracy": 0.81, "log_loss": 0.2}, None, False,
     "evaluation failed: accuracy 0.810 < 0.900 required (evaluation.csv, 150 rows)"),
    ({"accuracy": 0.95, "log_loss": 0.7}, None, False,
     "evaluation failed: log_loss 0.700 > 0.500 allowed (evaluation.csv, 150 rows)"),
    ({"accuracy": 0.93, "log_loss": 0.2}, {"accuracy": 0.97}, False,
     "evaluation failed: accuracy 0.930, 0.040 below live version 3 (max_drop 0.010) (evaluation.csv, 150 rows)"),
    ({"accuracy": 0.965, "log_loss": 0.2}, {"accuracy": 0.97}, True, ""),  # within max_drop
    ({"accuracy": 0.99, "log_loss": 0.2}, {"accuracy": 0.97}, True, ""),
    ({"accuracy": float("nan"), "log_loss": 0.2}, None, False,
     "evaluation failed: accuracy nan < 0.900 required (evaluation.csv, 150 rows)"),
])
def test_the_verdict_names_each_figure_that_misses(metrics: dict[str, float], live: dict[str, float] | None,
                                                   passed: bool, message: str) -> None:
    outcome = verdict(GATED, Figures(metrics, 150, "evaluation.csv", 3 if live else None, live))

    assert (outcome.passed, outcome.message) == (passed, message)


def test_the_summary_is_one_line_of_figures_with_the_live_versions() -> None:
    outcome = verdict(GATED, Figures({"accuracy": 0.953, "log_loss": 0.21}, 150, "evaluation.csv", 3,
                                     {"accuracy": 0.947}))
    assert outcome.summary == "accuracy=0.953 log_loss=0.210 (live v3: accuracy=0.947) (evaluation.csv, 150 rows)"


def test_lower_is_better_metrics_regress_upwards() -> None:
    gate = Evaluation.model_validate({"data": "d.csv", "target": "y",
                                      "compare_with_live": {"metric": "rmse", "max_drop": 0.5}})
    assert verdict(gate, Figures({"rmse": 12.0}, 10, "d.csv", 2, {"rmse": 11.8})).passed
    worse = verdict(gate, Figures({"rmse": 13.0}, 10, "d.csv", 2, {"rmse": 11.8}))
    assert worse.message == "evaluation failed: rmse 13, 1.200 above live version 2 (max_drop 0.500) (d.csv, 10 rows)"


# --- batched scoring against scikit-learn on the whole data ------------------------------------

CLASSIFICATION = ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted",
                  "roc_auc", "log_loss"]


def _whole(name: str, truth: np.ndarray, predicted: np.ndarray, proba: np.ndarray) -> float:
    """scikit-learn's figure on all rows at once: the peer the batched tally must agree with."""
    if name == "roc_auc":
        return float(skm.roc_auc_score(truth, proba[:, 1]) if proba.shape[1] == 2
                     else skm.roc_auc_score(truth, proba, multi_class="ovr"))
    if name == "log_loss":
        return float(skm.log_loss(truth, proba, labels=list(range(proba.shape[1]))))
    average = {"precision_macro": (skm.precision_score, "macro"), "recall_macro": (skm.recall_score, "macro"),
               "f1_macro": (skm.f1_score, "macro"), "f1_weighted": (skm.f1_score, "weighted")}
    if name in average:
        score, how = average[name]
        return float(score(truth, predicted, average=how, zero_division=0.0))
    return float({"accuracy": skm.accuracy_score, "balanced_accuracy": skm.balanced_accuracy_score}[name](
        truth, predicted))


@pytest.mark.parametrize("classes", [2, 3, 7])
@pytest.mark.parametrize("batch", [97, 1000, 5000])
def test_batched_classification_figures_equal_scikit_learns_on_all_rows(classes: int, batch: int) -> None:
    rng = np.random.default_rng(classes * 1000 + batch)
    rows = 3000
    truth = rng.integers(0, classes, rows)
    proba = rng.dirichlet(np.ones(classes), rows)
    proba[np.arange(rows), truth] += rng.uniform(0, 1.5, rows)  # better than chance, not perfect
    proba /= proba.sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    predicted[rng.random(rows) < 0.05] = classes - 1  # some classes over-predicted, as real models do
    gate = Evaluation.model_validate({"data": "d.csv", "target": "y",
                                      "metrics": {name: {"min": 0} for name in CLASSIFICATION}})
    tally = Tally(gate, "classification", classes=list(range(classes)))
    for start in range(0, rows, batch):
        part = slice(start, start + batch)
        tally.add(pd.Series(truth[part]), predicted[part], proba[part])

    figures = tally.results()

    for name in CLASSIFICATION:
        assert figures[name] == pytest.approx(_whole(name, truth, predicted, proba), rel=1e-9, abs=1e-12), name


def test_batched_regression_figures_equal_scikit_learns() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(100, 20, 2500)
    predicted = truth + rng.normal(0, 5, 2500)
    gate = Evaluation.model_validate({"data": "d.csv", "target": "y",
                                      "metrics": {name: {"max": 1e9} for name in ("rmse", "mae", "r2", "mape")}})
    tally = Tally(gate, "regression")
    for start in range(0, 2500, 700):
        tally.add(pd.Series(truth[start:start + 700]), predicted[start:start + 700], None)

    figures = tally.results()

    assert figures == pytest.approx({"rmse": skm.root_mean_squared_error(truth, predicted),
                                     "mae": skm.mean_absolute_error(truth, predicted),
                                     "r2": skm.r2_score(truth, predicted),
                                     "mape": skm.mean_absolute_percentage_error(truth, predicted)}, rel=1e-12)


def test_label_names_in_the_target_map_to_the_models_classes() -> None:
    gate = Evaluation.model_validate({"data": "d.csv", "target": "species", "metrics": {"accuracy": {"min": 0}}})
    tally = Tally(gate, "classification", classes=[0, 1, 2], labels=["setosa", "versicolor", "virginica"])
    tally.add(pd.Series(["setosa", "virginica", "versicolor", "setosa"]), np.array([0, 2, 2, 0]), None)
    assert tally.results() == {"accuracy": 0.75}


@pytest.mark.parametrize(("truth", "proba", "problem"), [
    (["setosa", "setosa"], None, "need a model that gives class probabilities"),
    ([0, 5], [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], "the target has the value 5, which is not one of the model's"),
    ([0, 0], [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], "roc_auc is undefined on this data"),
])
def test_figures_that_cannot_be_computed_say_why(truth: list[Any], proba: list[list[float]] | None,
                                                  problem: str) -> None:
    gate = Evaluation.model_validate({"data": "d.csv", "target": "species", "metrics": {"roc_auc": {"min": 0}}})
    tally = Tally(gate, "classification", classes=[0, 1, 2], labels=["setosa", "versicolor", "virginica"])
    with pytest.raises(DataProblem, match=problem):
        tally.add(pd.Series(truth), np.array([0, 1]), None if proba is None else np.array(proba))
        tally.results()


# --- reading the data -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_csv_and_parquet_are_read_in_batches_of_the_same_rows(tmp_path: Path, kind: str) -> None:
    table = iris_table()
    path = tmp_path / f"evaluation.{kind}"
    path.write_bytes(csv_bytes(table) if kind == "csv" else parquet_bytes(table))

    batches = list(read_batches(path, path.name, batch_rows=40))

    assert [len(b) for b in batches] == [40, 40, 40, 30]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), table, check_dtype=False)


@pytest.mark.parametrize(("content", "problem"), [
    ("sepal_length,species\n5.1,set\xf6sa\n".encode("latin-1"), "is not UTF-8 text"),
    (b"", "cannot be read as csv"),
    (b'a,b\n"unclosed,1\n', "cannot be read as csv"),
])
def test_unreadable_csv_is_a_problem_naming_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "evaluation.csv"
    path.write_bytes(content)
    with pytest.raises(DataProblem, match=problem):
        list(read_batches(path, "evaluation.csv"))


def test_a_parquet_file_that_is_not_one_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataProblem, match=r"evaluation\.parquet cannot be read as parquet"):
        list(read_batches(path, path.name))


@pytest.mark.parametrize(("columns", "problem"), [
    (["sepal_length", "sepal_width", "petal_length", "petal_width"], "target column 'species' is not among"),
    (["sepal_length", "sepal_width", "petal_length", "species"], "do not match the contract: missing 'petal_width'"),
    (["sepal_length", "sepal_width", "petal_length", "petal_width", "species", "id"],
     "do not match the contract: not in the contract 'id'"),
])
def test_columns_must_be_the_inputs_and_the_target(columns: list[str], problem: str) -> None:
    contract = parse_contract((IRIS_CONTRACT + GATE).encode())
    assert contract.evaluation is not None
    with pytest.raises(DataProblem, match=problem):
        check_columns(columns, contract, contract.evaluation, "evaluation.csv")
