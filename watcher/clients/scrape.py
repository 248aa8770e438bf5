"""Reads the figures progressive delivery judges: a wrapper's Prometheus `/metrics`, and the comparison
counters of the version on trial.

Called by the targets (`watcher.targets.local_rollout`, `watcher.targets.kubernetes.candidates`) for each look
at a rollout; the verdict on the
figures is pure (`watcher.decide.progressive`). Only prediction requests count: probes, Swagger and the
metrics scrapes themselves would dilute a version's error rate and latency.
"""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Iterator

from prometheus_client.parser import text_string_to_metric_families

from watcher.decide.progressive import Comparison, WrapperFigures
from watcher.errors import Retryable

PREDICTION_ENDPOINTS = frozenset({"predict", "invocations", "root_invocations"})
TIMEOUT_SECONDS = 5
REQUESTS, BUCKETS = "model_wrapper_requests_total", "model_wrapper_request_duration_seconds_bucket"
OUTCOMES = "model_wrapper_shadow_total"
DIFF_SUM, DIFF_COUNT = "model_wrapper_shadow_abs_diff_total", "model_wrapper_shadow_abs_diff_values_total"
Series = tuple[str, dict[str, str], float]
"""One sample: its metric name, labels and value, from a `/metrics` page or a Prometheus query alike."""


def wrapper_figures(base_url: str) -> WrapperFigures:
    """The prediction requests, their 5xx answers and latency histogram from the wrapper at `base_url`."""
    return parse_metrics(metrics_text(base_url))


def metrics_text(base_url: str) -> str:
    """The wrapper's `/metrics` page at `base_url`."""
    return _get(f"{base_url.rstrip('/')}/metrics").decode()


def parse_comparison(text: str, candidate: str) -> Comparison:
    """The comparison counts a wrapper keeps of the candidate version `candidate` against live, whichever side
    mirrored (`model_wrapper.http.shadow`: the live wrapper in a shadow, the candidate's in a canary)."""
    return comparison_of(series for series in _series(text) if series[1].get("candidate") == candidate)


def parse_metrics(text: str) -> WrapperFigures:
    return wrapper_figures_of(_series(text))


def wrapper_figures_of(samples: Iterable[Series]) -> WrapperFigures:
    """One version's prediction requests, their 5xx answers and latency histogram, from its samples (the rule
    both figure sources follow: this module's pages and `watcher.clients.prometheus`)."""
    requests, errors = 0, 0
    buckets: dict[float, float] = defaultdict(float)
    for name, labels, value in samples:
        if labels.get("endpoint") not in PREDICTION_ENDPOINTS:
            continue
        if name == REQUESTS:
            requests += int(value)
            errors += int(value) if labels.get("status", "").startswith("5") else 0
        elif name == BUCKETS:
            buckets[float(labels["le"])] += value
    return WrapperFigures(requests, errors, tuple(sorted(buckets.items())))


def comparison_of(samples: Iterable[Series]) -> Comparison:
    """The comparison counts among `samples` (already narrowed to one candidate and the side that mirrors)."""
    counts: dict[str, float] = defaultdict(float)
    for name, labels, value in samples:
        if name == OUTCOMES:
            counts[labels.get("outcome", "")] += value
        elif name in (DIFF_SUM, DIFF_COUNT):
            counts[name] += value
    return Comparison(int(counts["compared"]), int(counts["agreed"]), counts[DIFF_SUM], int(counts[DIFF_COUNT]))


def comparison(url: str, candidate_url: str) -> Comparison:
    """The comparison counters the front keeps for `candidate_url` (zero when it keeps none for it)."""
    counts = json.loads(_get(url))
    if counts.get("candidate") != candidate_url:
        return Comparison()
    return Comparison(int(counts["compared"]), int(counts["agreed"]), float(counts["abs_diff_sum"]),
                      int(counts["abs_diff_count"]), int(counts["rescued"]))


def _series(text: str) -> Iterator[Series]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310 - our own processes
            return bytes(answer.read())
    except (OSError, ValueError) as e:
        raise Retryable(f"could not read the rollout's figures at {url} ({type(e).__name__}); "
                        "checking again next pass") from e
