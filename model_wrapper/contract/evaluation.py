"""The evaluation gate's rules: the contract's `evaluation` section, its metrics, and the verdict.

Pure (no MLflow, no I/O): the contract parser validates the section with these types, the
`evaluate` command (`model_wrapper.evaluate.job`) computes the figures with scikit-learn, and the
watcher (`watcher.reconcile.gate`) turns the figures into passed or failed with `verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

DATA_SUFFIXES = (".csv", ".parquet")
# A file name beside contract.yaml, or below it (no control characters; `..` and `/…` are refused below).
DataPath = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f\\]{1,255}$")]


@dataclass(frozen=True)
class Metric:
    """One metric: its task, whether it needs class probabilities, and which way is better."""

    task: str
    higher_is_better: bool
    needs_probabilities: bool = False


METRICS: dict[str, Metric] = {
    **{name: Metric("classification", True) for name in (
        "accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted")},
    "roc_auc": Metric("classification", True, needs_probabilities=True),
    "log_loss": Metric("classification", False, needs_probabilities=True),
    "rmse": Metric("regression", False),
    "mae": Metric("regression", False),
    "r2": Metric("regression", True),
    "mape": Metric("regression", False),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bound(_Strict):
    """What a metric must reach: at least `min`, at most `max`, or both."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _meaningful(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if any(value is not None and not math.isfinite(value) for value in (self.min, self.max)):
            raise ValueError("min and max must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class CompareWithLive(_Strict):
    """No worse than the version serving now, on the same data, by more than `max_drop`."""

    metric: str
    max_drop: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @field_validator("metric")
    @classmethod
    def _known(cls, name: str) -> str:
        return known_metric(name)


class Evaluation(_Strict):
    """The contract's optional `evaluation` section."""

    data: DataPath
    """A csv or parquet file logged beside contract.yaml: the input columns plus the target."""
    target: str = Field(min_length=1, max_length=128)
    """The column holding the truth: a class index, or a name from `labels`."""
    metrics: dict[str, Bound] = Field(default={}, max_length=len(METRICS))
    compare_with_live: CompareWithLive | None = None

    @field_validator("data")
    @classmethod
    def _readable_kind(cls, data: str) -> str:
        if data.startswith("/") or ".." in data.split("/"):
            raise ValueError(f"{data!r} must name a file beside contract.yaml (no absolute path, no '..')")
        if not data.lower().endswith(DATA_SUFFIXES):
            raise ValueError(f"{data!r} is neither .csv nor .parquet; log the data as one of those")
        return data

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: dict[str, Bound]) -> dict[str, Bound]:
        for name in metrics:
            known_metric(name)
        return metrics

    @model_validator(mode="after")
    def _something_to_check(self) -> Evaluation:
        if not self.metrics and self.compare_with_live is None:
            raise ValueError("give metrics (each with min and/or max), compare_with_live, or both")
        return self

    @property
    def wanted(self) -> list[str]:
        """Every metric to compute: the bounded ones and the one compared with the live version."""
        names = list(self.metrics)
        if self.compare_with_live is not None and self.compare_with_live.metric not in names:
            names.append(self.compare_with_live.metric)
        return names

    def problems_for(self, task: str, inputs: Mapping[str, Any]) -> list[str]:
        """Where the section does not fit the rest of the contract (its task and inputs)."""
        problems = []
        if task not in ("classification", "regression"):
            problems.append(f"needs task: classification or regression (the contract says {task})")
        else:
            problems += [f"{name} is a {METRICS[name].task} metric; this task is {task}"
                         for name in self.wanted if METRICS[name].task != task]
        if self.target in inputs:
            problems.append(f"the target {self.target!r} is also one of the inputs; the truth cannot be an input")
        return problems


def known_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; use one of {', '.join(METRICS)}")
    return name


def column_problem(columns: Sequence[str], inputs: Mapping[str, bool], target: str, name: str) -> str | None:
    """Why a data file's columns are not the contract's inputs (name → required) plus the target, or None."""
    if target not in columns:
        return f"the target column {target!r} is not among {name}'s columns ({_listing(columns)})"
    missing = [n for n, required in inputs.items() if required and n not in columns]
    unknown = [c for c in columns if c != target and c not in inputs]
    if not missing and not unknown:
        return None
    parts = ([f"missing {_listing(missing)}"] if missing else []) + \
            ([f"not in the contract {_listing(unknown)}"] if unknown else [])
    return f"{name}'s input columns do not match the contract: {'; '.join(parts)}"


def _listing(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n[:40]) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- the verdict ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What one evaluation measured: the version's metrics and, when compared, the live version's."""

    metrics: Mapping[str, float]
    rows: int
    data: str
    live_version: int | None = None
    live_metrics: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    summary: str
    """One short line of the figures (the `evaluation_summary` tag)."""
    message: str
    """Why it failed, with the figures (the `deployment_message`), or empty when it passed."""


def verdict(evaluation: Evaluation, figures: Figures) -> Verdict:
    """Passed when every bound holds and the compared metric dropped no more than allowed."""
    where = f"({figures.data}, {figures.rows} rows)"
    failures = [problem for name, bound in evaluation.metrics.items()
                if (problem := _outside(name, figures.metrics[name], bound))]
    compare = evaluation.compare_with_live
    if compare is not None and figures.live_metrics is not None and (problem := _regression(
            compare, figures.metrics[compare.metric], figures.live_metrics[compare.metric], figures.live_version)):
        failures.append(problem)
    summary = " ".join(f"{name}={_fmt(figures.metrics[name])}" for name in evaluation.wanted)
    if compare is not None and figures.live_metrics is not None:
        summary += f" (live v{figures.live_version}: {compare.metric}={_fmt(figures.live_metrics[compare.metric])})"
    message = f"evaluation failed: {'; '.join(failures)} {where}" if failures else ""
    return Verdict(not failures, f"{summary} {where}", message)


def _outside(name: str, value: float, bound: Bound) -> str | None:
    if bound.min is not None and not value >= bound.min:  # `not >=`: NaN fails too
        return f"{name} {_fmt(value)} < {_fmt(bound.min)} required"
    if bound.max is not None and not value <= bound.max:
        return f"{name} {_fmt(value)} > {_fmt(bound.max)} allowed"
    return None


def _regression(compare: CompareWithLive, value: float, live: float, live_version: int | None) -> str | None:
    better: Callable[[float, float], float] = (lambda a, b: a - b) if METRICS[compare.metric].higher_is_better \
        else (lambda a, b: b - a)
    drop = better(live, value)
    if not drop <= compare.max_drop + 1e-12:  # the same model on the same data must pass at max_drop 0
        side = "below" if METRICS[compare.metric].higher_is_better else "above"
        return (f"{compare.metric} {_fmt(value)}, {_fmt(abs(drop))} {side} live version {live_version} "
                f"(max_drop {_fmt(compare.max_drop)})")
    return None


def _fmt(value: float) -> str:
    """Three decimals for scores in [0, 1] as people quote them; four significant digits otherwise."""
    return f"{value:.3f}" if math.isfinite(value) and abs(value) < 10 else f"{value:.4g}"
