"""Drift between a version's reference data and its logged live inputs: PSI, the verdict, the summary line.

Pure (numpy only, no I/O): `watcher.reconcile.drift` reads the inference log and the reference data and
hands the columns here. The population stability index is sum of (live - ref) * ln(live / ref) over the
shares of each bin: quantile bins of the reference for numbers, categories for strings and booleans.
A dozen lines of numpy rather than Evidently's data-drift preset (docs/drift.md says why).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_wrapper.contract.monitoring import Drift

# An empty bin's share: ln(0) has no value, and one empty bin must not dominate the index.
EPSILON = 1e-4
OTHER = "(other)"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the predictions') PSI and the shares it compares, bin by bin."""

    name: str
    psi: float
    bins: tuple[str, ...]
    reference: tuple[float, ...]
    live: tuple[float, ...]


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime
    requests: int
    rows: int


@dataclass(frozen=True)
class Verdict:
    status: str | None
    """`ok`, `drifted`, or None: too few requests to say."""
    drifted: tuple[FeatureDrift, ...]
    summary: str


def numeric_drift(name: str, reference: Sequence[float], live: Sequence[float], bins: int) -> FeatureDrift:
    """PSI over the reference's quantile bins (ties merged; values outside fall in the outer bins)."""
    ref, now = _finite(reference), _finite(live)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))[1:-1]) if ref.size else np.array([])
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    live_counts = np.bincount(np.searchsorted(edges, now, side="right"), minlength=edges.size + 1)
    labels = _interval_labels(edges)
    return _drift(name, labels, ref_counts, live_counts)


def categorical_drift(name: str, reference: Sequence[Any], live: Sequence[Any]) -> FeatureDrift:
    """PSI over the reference's categories; live values it never had share one `(other)` bin."""
    known = sorted({str(value) for value in reference if value is not None})
    index = {value: i for i, value in enumerate(known)}
    ref_counts = np.bincount([index[str(v)] for v in reference if v is not None], minlength=len(known) + 1)
    live_counts = np.bincount([index.get(str(v), len(known)) for v in live if v is not None],
                              minlength=len(known) + 1)
    return _drift(name, (*known, OTHER), ref_counts, live_counts)


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """The population stability index of two count vectors over the same bins."""
    if reference.sum() == 0 or live.sum() == 0:
        return 0.0
    ref = np.maximum(reference / reference.sum(), EPSILON)
    now = np.maximum(live / live.sum(), EPSILON)
    return float(np.sum((now - ref) * np.log(now / ref)))


def verdict(features: Sequence[FeatureDrift], prediction: FeatureDrift | None, window: Window,
            thresholds: Drift) -> Verdict:
    """`drifted` when more features than allowed (or the predictions) are past their PSI threshold."""
    drifted = tuple(sorted((f for f in features if f.psi > thresholds.max_psi), key=lambda f: -f.psi))
    span = f"{window.requests:,} requests {day_span(window.start, window.end)}"
    if window.rows < thresholds.min_requests:
        return Verdict(None, (), f"too few logged instances to judge ({window.rows:,} < "
                                 f"{thresholds.min_requests:,}); {span}")
    prediction_limit = thresholds.max_prediction_psi or thresholds.max_psi
    prediction_drifted = prediction is not None and prediction.psi > prediction_limit
    if prediction_drifted and prediction is not None:
        drifted = (*drifted, prediction)
    status = "drifted" if len(drifted) - prediction_drifted > thresholds.max_drifted_features \
        or prediction_drifted else "ok"
    return Verdict(status, drifted, summary_line(features, prediction, window, thresholds.max_psi))


def summary_line(features: Sequence[FeatureDrift], prediction: FeatureDrift | None, window: Window,
                 threshold: float) -> str:
    """e.g. `max PSI 0.31 (bmi); 2 of 9 features drifted; 12,408 requests 2026-12-05..06`."""
    top = max(features, key=lambda f: f.psi, default=None)
    parts = [f"max PSI {top.psi:.2f} ({top.name})" if top else "no features"]
    parts.append(f"{sum(f.psi > threshold for f in features)} of {len(features)} features drifted")
    if prediction is not None:
        parts.append(f"prediction PSI {prediction.psi:.2f}")
    return "; ".join(parts) + f"; {window.requests:,} requests {day_span(window.start, window.end)}"


def metrics(features: Sequence[FeatureDrift], prediction: FeatureDrift | None, window: Window) -> dict[str, float]:
    """The figures logged to MLflow on the version: each feature's PSI, the maximum, the counts."""
    figures = {f"drift_psi_{_metric_name(f.name)}": round(f.psi, 6) for f in features}
    figures["drift_max_psi"] = round(max((f.psi for f in features), default=0.0), 6)
    figures["drift_requests"] = float(window.requests)
    if prediction is not None:
        figures["drift_prediction_psi"] = round(prediction.psi, 6)
    return figures


def day_span(start: dt.datetime, end: dt.datetime) -> str:
    """`2026-12-05..06`, `2026-11-30..12-01`, `2025-12-31..2026-01-01`, or one day."""
    first, last = start.date(), end.date()
    if first == last:
        return first.isoformat()
    shown = last.strftime("%d") if (first.year, first.month) == (last.year, last.month) else \
        last.strftime("%m-%d") if first.year == last.year else last.isoformat()
    return f"{first.isoformat()}..{shown}"


def max_psi(features: Sequence[FeatureDrift]) -> float:
    return max((f.psi for f in features), default=0.0)


def _drift(name: str, labels: Sequence[str], reference: np.ndarray, live: np.ndarray) -> FeatureDrift:
    ref_shares = reference / max(reference.sum(), 1)
    live_shares = live / max(live.sum(), 1)
    return FeatureDrift(name, psi(reference, live), tuple(labels), tuple(map(float, ref_shares)),
                        tuple(map(float, live_shares)))


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _interval_labels(edges: np.ndarray) -> tuple[str, ...]:
    if edges.size == 0:
        return ("all",)
    shown = [f"{edge:.4g}" for edge in edges]
    return (f"< {shown[0]}", *(f"{a} to {b}" for a, b in itertools.pairwise(shown)), f"≥ {shown[-1]}")


def _metric_name(name: str) -> str:
    # MLflow metric names: alphanumerics, _ - . space / only.
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)[:200]


def by_kind(reference: Mapping[str, Sequence[Any]], live: Mapping[str, Sequence[Any]], numeric: set[str],
            bins: int) -> list[FeatureDrift]:
    """Each feature present on both sides, numeric or categorical by the contract's field type."""
    found = []
    for name in reference:
        if name in live:
            found.append(numeric_drift(name, reference[name], live[name], bins) if name in numeric
                         else categorical_drift(name, reference[name], live[name]))
    return found
