"""Scoring evaluation data in batches: read csv or parquet a batch at a time, accumulate the metrics.

Used by `model_wrapper.evaluate.job`. Memory stays bounded by the batch, not the file: the label
metrics keep only a confusion matrix (scikit-learn computes them from it, each cell weighted by
its count), log_loss a running sum; roc_auc and the regression metrics keep one number per row
(and class), never the inputs. Every figure is scikit-learn's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from model_wrapper.contract.evaluation import METRICS, Evaluation, column_problem
from model_wrapper.contract.spec import Contract, FieldType

BATCH_ROWS = 10_000
MAX_CLASSES = 10_000


class DataProblem(ValueError):
    """The evaluation data cannot be scored as the contract describes; the message says what to fix."""


def read_batches(path: Path, name: str, batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """The file a batch of rows at a time (csv must be UTF-8)."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                yield batch.to_pandas()
        else:
            with pd.read_csv(path, chunksize=batch_rows, encoding="utf-8", encoding_errors="strict",
                             low_memory=False) as reader:
                yield from reader
    except UnicodeDecodeError as e:
        raise DataProblem(f"{name} is not UTF-8 text; save it as UTF-8") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as e:
        if isinstance(e, DataProblem):
            raise
        raise DataProblem(f"{name} cannot be read as {path.suffix.lstrip('.').lower() or 'csv'}: "
                          f"{_first_line(e)}") from e


def check_columns(columns: Sequence[Any], contract: Contract, evaluation: Evaluation, name: str) -> None:
    """The file's columns must be the contract's inputs plus the target: nothing missing, nothing else."""
    required = {n: spec.required for n, spec in contract.inputs.items()}
    if problem := column_problem([str(c) for c in columns], required, evaluation.target, name):
        raise DataProblem(problem)


def rows_of(batch: pd.DataFrame, contract: Contract, columns: list[str], name: str,
            first_row: int = 1) -> list[tuple[Any, ...]]:
    """The batch's inputs as rows in the model's column order, each column checked against the contract."""
    for column in columns:
        spec = contract.inputs[column]
        values = batch[column] if column in batch else pd.Series([None] * len(batch), index=batch.index)
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if spec.type in (FieldType.number, FieldType.integer) and column in batch and not numeric:
            raise DataProblem(f"{name}: column {column!r} holds values that are not numbers "
                                  f"(first: {_first_bad(values)})")
        if spec.required and not spec.allow_nan and values.isna().any():
            raise DataProblem(f"{name}: column {column!r} is empty in row {first_row - 1 + _first_row(values.isna())}; "
                              "the contract requires it")
    frame = batch.reindex(columns=columns).astype(object).where(batch.reindex(columns=columns).notna(), None)
    return list(frame.itertuples(index=False, name=None))


@dataclass
class Tally:
    """The running state of one model's metrics over the batches."""

    evaluation: Evaluation
    task: str
    classes: list[Any] | None = None
    """The model's classes in probability-column order (classification models with probabilities)."""
    labels: list[str] | None = None
    rows: int = 0
    _codes: dict[Any, int] = field(default_factory=dict)
    _confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    _loss: float = 0.0
    _kept: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for value in self.classes or []:
            self._code(_native(value))

    def add(self, truth: pd.Series, predictions: Any, probabilities: Any | None) -> None:
        self.rows += len(truth)
        if self.task == "regression":
            self._kept.append((_numbers(truth, "target"), _numbers(predictions, "prediction")))
            return
        true_codes = np.array([self._code(self._class_of(v)) for v in truth], dtype=np.int64)
        predicted = np.array([self._code(_native(v)) for v in np.asarray(predictions).ravel()], dtype=np.int64)
        self._count(true_codes, predicted)
        if any(METRICS[m].needs_probabilities for m in self.evaluation.wanted):
            proba = self._probabilities(probabilities, true_codes)
            if "log_loss" in self.evaluation.wanted:
                self._loss += float(skm.log_loss(true_codes, proba, labels=list(range(proba.shape[1])),
                                                 normalize=False))
            if "roc_auc" in self.evaluation.wanted:
                self._kept.append((true_codes, proba))

    def results(self) -> dict[str, float]:
        if self.rows == 0:
            raise DataProblem("the evaluation data has no rows")
        figures = {name: self._metric(name) for name in self.evaluation.wanted}
        if undefined := [name for name, value in figures.items() if not math.isfinite(value)]:
            raise DataProblem(f"{', '.join(undefined)} is undefined on this data (e.g. a constant target)")
        return figures

    # --- classification ---------------------------------------------------------------------

    def _class_of(self, value: Any) -> Any:
        value = _native(value)
        if isinstance(value, str) and self.labels and value in self.labels:
            index = self.labels.index(value)
            return _native(self.classes[index]) if self.classes and len(self.classes) == len(self.labels) else index
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise DataProblem(f"the target column {self.evaluation.target!r} has an empty value")
        return value

    def _code(self, value: Any) -> int:
        if value not in self._codes:
            if len(self._codes) >= MAX_CLASSES:
                raise DataProblem(f"more than {MAX_CLASSES} distinct classes in the target and predictions")
            self._codes[value] = len(self._codes)
        return self._codes[value]

    def _count(self, true_codes: np.ndarray, predicted: np.ndarray) -> None:
        size = len(self._codes)
        if self._confusion.shape[0] < size:
            grown = np.zeros((size, size), dtype=np.int64)
            grown[: self._confusion.shape[0], : self._confusion.shape[1]] = self._confusion
            self._confusion = grown
        self._confusion += skm.confusion_matrix(true_codes, predicted, labels=list(range(size)))

    def _probabilities(self, probabilities: Any | None, true_codes: np.ndarray) -> np.ndarray:
        if probabilities is None or not self.classes:
            raise DataProblem("roc_auc and log_loss need a model that gives class probabilities (predict_proba)")
        proba = np.asarray(probabilities, dtype=np.float64)
        if true_codes.size and int(true_codes.max()) >= proba.shape[1]:
            strange = next(v for v, c in self._codes.items() if c >= proba.shape[1])
            raise DataProblem(f"the target has the value {strange!r}, which is not one of the model's classes "
                              f"{self.classes[:10]}")
        return proba

    def _metric(self, name: str) -> float:
        try:
            if self.task == "regression":
                truth, predicted = (np.concatenate(part) for part in zip(*self._kept, strict=True))
                return _regression(name, truth, predicted)
            if name == "log_loss":
                return self._loss / self.rows
            if name == "roc_auc":
                return self._roc_auc()
            return self._from_confusion(name)
        except ValueError as e:  # e.g. roc_auc with a single class in the data
            raise DataProblem(f"{name} cannot be computed on this data: {_first_line(e)}") from e

    def _from_confusion(self, name: str) -> float:
        """Each (truth, prediction) cell once, weighted by its count: scikit-learn sees the same data."""
        cells = np.argwhere(self._confusion > 0)
        truth, predicted = cells[:, 0], cells[:, 1]
        weight = self._confusion[truth, predicted]
        averaged = {"precision_macro": (skm.precision_score, "macro"), "recall_macro": (skm.recall_score, "macro"),
                    "f1_macro": (skm.f1_score, "macro"), "f1_weighted": (skm.f1_score, "weighted")}
        if name in averaged:
            score, average = averaged[name]
            return float(score(truth, predicted, average=average, sample_weight=weight, zero_division=0.0))
        plain = {"accuracy": skm.accuracy_score, "balanced_accuracy": skm.balanced_accuracy_score}
        return float(plain[name](truth, predicted, sample_weight=weight))

    def _roc_auc(self) -> float:
        truth = np.concatenate([t for t, _ in self._kept])
        proba = np.concatenate([p for _, p in self._kept])
        if proba.shape[1] == 2:
            return float(skm.roc_auc_score(truth, proba[:, 1]))
        return float(skm.roc_auc_score(truth, proba, multi_class="ovr", labels=list(range(proba.shape[1]))))


def _regression(name: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    if name == "rmse":
        return float(skm.root_mean_squared_error(truth, predicted))
    scores = {"mae": skm.mean_absolute_error, "r2": skm.r2_score, "mape": skm.mean_absolute_percentage_error}
    return float(scores[name](truth, predicted))


def _numbers(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise DataProblem(f"the {what} values are not numbers: {_first_line(e)}") from e
    if not np.isfinite(array).all():
        raise DataProblem(f"the {what} has an empty or infinite value")
    return array


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _first_row(mask: pd.Series) -> int:
    return int(np.argmax(mask.to_numpy())) + 1


def _first_bad(values: pd.Series) -> str:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    return repr(values[bad].iloc[0])[:40] if bad.any() else "?"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]
