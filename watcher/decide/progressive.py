"""Progressive delivery's verdicts: where a candidate's rollout stands and what its figures say next.

Pure: the pass (`watcher.reconcile.progressive`) reads the figures (both wrappers' `/metrics` and the
comparison counters) and the step from the candidate's tags, and `judge` says hold, go to the next step,
promote, or roll back, with the reasons. Table-tested in `tests/rollout/test_verdicts.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from model_wrapper.contract.comparison import Tally
from model_wrapper.contract.rollout import Rollout
from watcher.decide.retry import as_utc

ROLLOUT_STATUS = "rollout_status"
ROLLOUT_SUMMARY = "rollout_summary"
ROLLOUT_STEP = "rollout_step"
"""Bookkeeping: the step's index, when it began and the candidate's request count then (survives the process)."""
FINISHED = frozenset({"promoted", "rolled back"})


@dataclass(frozen=True)
class WrapperFigures:
    """What one wrapper's `/metrics` say about its prediction requests since it started."""

    requests: int = 0
    errors: int = 0
    """Answers with a 5xx status (a fault of the model or the server, never of the caller)."""
    buckets: tuple[tuple[float, float], ...] = ()
    """The latency histogram: (upper bound in seconds, cumulative count), rising, +Inf last."""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def p99_ms(self) -> float | None:
        seconds = histogram_quantile(0.99, self.buckets)
        return None if seconds is None else seconds * 1000


Comparison = Tally
"""The same requests answered by both versions, as the mirror counted them (agreement, mean |diff|)."""


@dataclass(frozen=True)
class Figures:
    candidate_version: int
    live_version: int
    candidate: WrapperFigures = field(default_factory=WrapperFigures)
    live: WrapperFigures = field(default_factory=WrapperFigures)
    comparison: Comparison = field(default_factory=Comparison)


@dataclass(frozen=True)
class Step:
    """Where the rollout stands: step `index` of the contract's stages, begun at `since`, when the candidate had
    answered `baseline` requests."""

    index: int
    since: datetime
    baseline: int = 0

    @classmethod
    def parse(cls, text: str) -> Step | None:
        parts = dict(item.partition("=")[::2] for item in text.split())
        try:
            return cls(int(parts["step"]), as_utc(datetime.fromisoformat(parts["since"])), int(parts["requests"]))
        except (KeyError, ValueError):
            return None

    def __str__(self) -> str:
        return f"step={self.index} since={self.since.isoformat(timespec='seconds')} requests={self.baseline}"


@dataclass(frozen=True)
class Move:
    kind: Literal["hold", "advance", "promote", "reject"]
    reasons: tuple[str, ...] = ()
    step: Step | None = None
    """The next step (advance only)."""


def judge(rollout: Rollout, step: Step, figures: Figures, now: datetime) -> Move:
    """Hold until the step has its requests, roll back as soon as a bound breaks, otherwise go on once the
    step's interval is over: to the next step, or, after the last, to promotion."""
    analysis, candidate = rollout.analysis, figures.candidate
    answered = candidate.requests - step.baseline if candidate.requests >= step.baseline else candidate.requests
    if answered < analysis.min_requests:
        return Move("hold", (f"{answered} of {analysis.min_requests} requests in this step",))
    if problems := breaches(rollout, figures):
        return Move("reject", tuple(problems))
    if (analysis.min_agreement is not None and figures.comparison.agreement is None) or \
            (analysis.max_mean_abs_diff is not None and figures.comparison.mean_abs_diff is None):
        return Move("hold", ("no request compared yet",))
    elapsed = (as_utc(now) - step.since).total_seconds()
    if elapsed < analysis.interval:
        return Move("hold", (f"{elapsed:.0f} of {analysis.interval:g} s of this step",))
    if step.index + 1 < len(rollout.stages):
        return Move("advance", step=Step(step.index + 1, as_utc(now), candidate.requests))
    return Move("promote")


def breaches(rollout: Rollout, figures: Figures) -> list[str]:
    """Each bound the candidate's figures break, with the figure and the bound."""
    analysis, candidate, comparison = rollout.analysis, figures.candidate, figures.comparison
    problems = []
    if (rate := candidate.error_rate) is not None and rate > analysis.max_error_rate:
        problems.append(f"5xx rate {_pct(rate)} > {_pct(analysis.max_error_rate)} allowed "
                        f"({candidate.errors} of {candidate.requests})")
    if analysis.max_p99_ms is not None and (p99 := candidate.p99_ms) is not None and p99 > analysis.max_p99_ms:
        problems.append(f"p99 {p99:.0f} ms > {analysis.max_p99_ms:g} ms allowed")
    agreement = comparison.agreement
    if analysis.min_agreement is not None and agreement is not None and agreement < analysis.min_agreement:
        problems.append(f"agreement with live {_pct(agreement)} < {_pct(analysis.min_agreement)} required "
                        f"({comparison.agreed} of {comparison.compared})")
    diff = comparison.mean_abs_diff
    if analysis.max_mean_abs_diff is not None and diff is not None and diff > analysis.max_mean_abs_diff:
        problems.append(f"mean |candidate - live| {diff:.4g} > {analysis.max_mean_abs_diff:g} allowed")
    return problems


def summary(figures: Figures, *, agreement: bool = True) -> str:
    """One line of both versions' figures (the `rollout_summary` tag). Without `agreement` (a regression, whose
    predictions are rarely equal to the last digit), the share of equal answers is left out: mean |diff| says it."""
    candidate, live, comparison = figures.candidate, figures.live, figures.comparison
    parts = [f"candidate v{figures.candidate_version}: {_wrapper(candidate)}"]
    if comparison.compared:
        parts.append(f"agreement {_pct(comparison.agreement or 0)} of {comparison.compared} compared" if agreement
                     else f"{comparison.compared} compared")
    if comparison.mean_abs_diff is not None:
        parts.append(f"mean |diff| {comparison.mean_abs_diff:.4g}")
    if comparison.rescued:
        parts.append(f"{comparison.rescued} failed answers served by live instead")
    return "; ".join(parts) + f" | live v{figures.live_version}: {_wrapper(live)}"


def mlflow_metrics(figures: Figures, *, agreement: bool = True) -> dict[str, float]:
    """The figures as MLflow metrics (`rollout_` is prefixed where they are logged); `agreement` as in `summary`."""
    values = {"requests": float(figures.candidate.requests), "error_rate": figures.candidate.error_rate,
              "p99_ms": figures.candidate.p99_ms, "agreement": figures.comparison.agreement if agreement else None,
              "mean_abs_diff": figures.comparison.mean_abs_diff, "compared": float(figures.comparison.compared),
              "live_error_rate": figures.live.error_rate, "live_p99_ms": figures.live.p99_ms}
    return {name: value for name, value in values.items() if value is not None and math.isfinite(value)}


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' estimate (promql/quantile.go, `bucketQuantile`): linear within the bucket holding the rank; a
    rank in the +Inf bucket gives the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 0)
        lower, below = upper, count
    return lower


def _wrapper(figures: WrapperFigures) -> str:
    if not figures.requests:
        return "no requests"
    p99 = figures.p99_ms
    latency = f", p99 {p99:.0f} ms" if p99 is not None else ""
    return f"{figures.requests} requests, 5xx {_pct(figures.error_rate or 0)}{latency}"


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"
