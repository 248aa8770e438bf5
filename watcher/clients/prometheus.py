"""Reads progressive delivery's figures from Prometheus (`PROMETHEUS_URL`) instead of the wrappers' own `/metrics`.

Called by the targets (`watcher.targets.local_rollout`, `watcher.targets.kubernetes.cluster`) for each look at a
rollout when the setting is set; the verdict on the figures is pure (`watcher.decide.progressive`). The figures mean
what the scrape path's mean (`watcher.clients.scrape`): each counter's current value, summed over the processes
(pods) Prometheus scrapes, so counts since each one started. Candidate and live are told apart by the `model` and
`version` labels every wrapper series carries, so any scrape config of the pods serves (the stock `kubernetes-pods`
job, a PodMonitor, static targets) with no relabeling; `PROMETHEUS_MATCHERS` narrows the series further (on
Kubernetes, by default, to the namespace). Two instant queries a look (`/api/v1/query`), with `urllib`: a client
library (prometheus-api-client pulls pandas) would add dependencies for two GETs.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict

from watcher.clients.scrape import (
    BUCKETS,
    DIFF_COUNT,
    DIFF_SUM,
    OUTCOMES,
    REQUESTS,
    Series,
    comparison_of,
    wrapper_figures_of,
)
from watcher.config.settings import Settings
from watcher.decide.progressive import Comparison, Figures, WrapperFigures
from watcher.errors import Retryable

TIMEOUT_SECONDS = 5
Sample = tuple[dict[str, str], float]


class Prometheus:
    """One Prometheus server's HTTP API; `matchers` are added to every selector (empty: none)."""

    def __init__(self, url: str, matchers: str = "", timeout: float = TIMEOUT_SECONDS) -> None:
        self._url = url.rstrip("/") + "/api/v1/query"
        self._where = urllib.parse.urlsplit(url).hostname or url  # for messages: never a password in the URL
        self._matchers = matchers.strip()
        self._timeout = timeout

    def figures(self, model: str, candidate: int, live: int, comparison: Comparison | None = None, *,
                mirror: int | None = None) -> Figures:
        """Both versions' prediction figures; the comparison counts the `mirror` version's wrappers keep of what
        they asked the other (the live version's in a shadow, the candidate's in a canary), unless `comparison`
        is given (the local front counts its own)."""
        wrappers = self.wrappers(model, (candidate, live))
        if wrappers.get(str(candidate)) is None:
            raise Retryable(f"Prometheus at {self._where} has no series of {model} version {candidate} yet "
                            f"(is it scraping the model's pods? see docs/lifecycle.md)")
        compared = comparison if comparison is not None else \
            self.comparison(model, candidate, live if mirror is None else mirror)
        return Figures(candidate, live, wrappers[str(candidate)], wrappers.get(str(live), WrapperFigures()),
                       compared)

    def wrappers(self, model: str, versions: tuple[int, ...]) -> dict[str, WrapperFigures]:
        """Each version's prediction requests, 5xx answers and latency histogram, by version; a version with no
        series at all is absent (a version that answered no prediction yet has its probes' series)."""
        selector = self._selector(model=model, version=versions)
        samples = self.query(f'sum by (__name__, version, endpoint, status, le) '
                             f'({{__name__=~"{REQUESTS}|{BUCKETS}", {selector}}})')
        by_version: dict[str, list[Series]] = defaultdict(list)
        for labels, value in samples:
            by_version[labels.get("version", "")].append((labels.get("__name__", ""), labels, value))
        return {version: wrapper_figures_of(series) for version, series in by_version.items()}

    def comparison(self, model: str, candidate: int, mirror: int) -> Comparison:
        """What the `mirror` version's wrappers counted of the requests they asked the other version as well
        (`model_wrapper.http.shadow`), always under `candidate=` the candidate: on Kubernetes the live wrapper
        mirrors a shadow, and a canary's candidate asks live. Only that side's series, as the pods' own figures
        are read: a live wrapper's counts of an earlier shadow of the same version are not this trial's."""
        series = (f'{{__name__=~"{OUTCOMES}|{DIFF_SUM}|{DIFF_COUNT}", '
                      f'{self._selector(model=model, version=str(mirror), candidate=str(candidate))}}}')
        samples = self.query(f"sum by (__name__, outcome) ({series})")
        return comparison_of((labels.get("__name__", ""), labels, value) for labels, value in samples)

    def query(self, promql: str) -> list[Sample]:
        """An instant query's vector: each series' labels and value. Unreachable, refused or not a vector: Retryable,
        naming Prometheus' own reason."""
        url = f"{self._url}?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(url, timeout=self._timeout) as answer:  # noqa: S310 - the operator's URL
                body = json.loads(answer.read())
        except urllib.error.HTTPError as e:
            raise Retryable(f"Prometheus at {self._where} refused the query ({e.code}: {_reason(e)})") from e
        except (OSError, ValueError) as e:
            raise Retryable(f"could not query Prometheus at {self._where} ({type(e).__name__})") from e
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise Retryable(f"Prometheus at {self._where} answered no vector to an instant query")
        try:
            return [(dict(item["metric"]), value) for item in data.get("result") or []
                    if math.isfinite(value := float(item["value"][1]))]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise Retryable(f"Prometheus at {self._where} answered a vector this cannot read "
                            f"({type(e).__name__})") from e

    def _selector(self, **labels: str | tuple[int, ...]) -> str:
        """Label matchers: a string matches exactly, a tuple of versions any of them."""
        parts = [f"{name}={_quoted(value)}" if isinstance(value, str) else
                 f"{name}=~{_quoted('|'.join(str(v) for v in value))}" for name, value in labels.items()]
        return ", ".join([*parts, self._matchers] if self._matchers else parts)


def from_settings(settings: Settings) -> Prometheus | None:
    """The Prometheus `PROMETHEUS_URL` names, if set: where the targets read a rollout's figures."""
    return Prometheus(settings.prometheus_url, settings.prometheus_selector) if settings.prometheus_url else None


def _quoted(value: str) -> str:
    """A PromQL string literal: its escapes are Go's, and JSON's are a subset of them."""
    return json.dumps(value)


def _reason(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("error", error.reason))[:300]
    except (OSError, ValueError, AttributeError):
        return str(error.reason)
