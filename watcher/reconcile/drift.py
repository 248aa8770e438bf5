"""One drift measurement of one version: read its inference log and reference data, judge, record.

Called by `python -m watcher drift NAME [VERSION] [--since 24h]` (`watcher.entry.commands.drift`) and by
`watch` every DRIFT_INTERVAL_SECONDS. The reference is the contract's `evaluation.data` (looked up
beside contract.yaml, as the gate does) or, without one, the version's logged input example. The
figures (`watcher.decide.drift`) go to MLflow as metrics, the report (`watcher.render.drift_report`) as an
artifact, and the verdict to the `drift_status` and `drift_summary` tags.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from model_wrapper.contract.monitoring import Drift
from model_wrapper.contract.naming import model_slug
from model_wrapper.contract.spec import Contract, FieldType
from watcher.clients.artifacts import fetch_contract, input_example
from watcher.decide import drift
from watcher.decide.types import VersionInfo
from watcher.errors import ContractInvalid, Permanent, ServiceBuilderError
from watcher.render.drift_report import report_html

if TYPE_CHECKING:
    from watcher.reconcile.deps import Deps

log = logging.getLogger(__name__)
DRIFT_STATUS, DRIFT_SUMMARY = "drift_status", "drift_summary"
MAX_FILE_BYTES = 512 << 20
_NUMERIC = (FieldType.number, FieldType.integer)


@dataclass(frozen=True)
class Measured:
    version: VersionInfo
    outcome: drift.Verdict
    max_psi: float
    figures: dict[str, float]


def measure(deps: Deps, version: VersionInfo, *, since: dt.timedelta, until: dt.datetime | None = None) -> Measured:
    """Measure, log and tag the drift of `version` over [until - since, until]."""
    found = fetch_contract(deps.store, deps.registry, version)
    contract, thresholds = found.contract, found.contract.drift or Drift()
    end = until or deps.clock()
    window_start = end - since
    live = read_log(deps, version, found.origin, window_start, end)
    reference, described = read_reference(deps, version, found.origin, contract)
    features, prediction = _compare(contract, reference, live, thresholds.bins)
    window = drift.Window(window_start, end, int(live["request_id"].nunique()) if len(live) else 0, len(live))
    outcome = drift.verdict(features, prediction, window, thresholds)
    figures = drift.metrics(features, prediction, window)
    page = report_html(model=version.name, version=str(version.version), reference=described, features=features,
                       prediction=prediction, window=window, outcome=outcome, max_psi=thresholds.max_psi)
    deps.registry.log_drift(version, figures, int(deps.clock().timestamp() * 1000), page)
    _tag(deps, version, outcome)
    return Measured(version, outcome, drift.max_psi(features), figures)


def measure_deployed(deps: Deps, since: dt.timedelta) -> list[Measured]:
    """`measure` for every selected version that is deployed; a version that cannot be measured (no
    reference, S3 down) is logged and skipped."""
    done = []
    for version in deps.registry.selected(deps.settings.parsed_selector):
        if version.tags.get("deployment_status") != "deployed":
            continue
        try:
            done.append(measure(deps, version, since=since))
        except ServiceBuilderError as e:
            log.warning("%s: drift not measured: %s", version, e)
    return done


def read_log(deps: Deps, version: VersionInfo, origin: str, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The answered (status 200) instances the wrapper logged for `version` within the window."""
    folder = f"s3://{_bucket(deps, origin)}/{deps.settings.inference_log_prefix.strip('/')}/" \
             f"{model_slug(version.name)}/{version.version}"
    frames = []
    for day in _days(start, end):
        for uri in deps.store.keys(f"{folder}/date={day}"):
            data = deps.store.read(uri, MAX_FILE_BYTES)
            if data:
                frames.append(_parsed(pd.read_parquet, data, uri))
    if not frames:
        return pd.DataFrame({"request_id": [], "timestamp": []})
    records = pd.concat(frames, ignore_index=True)
    inside = (records["timestamp"] >= pd.Timestamp(start)) & (records["timestamp"] <= pd.Timestamp(end))
    return records[inside & (records["status"] == 200)]


def read_reference(deps: Deps, version: VersionInfo, origin: str, contract: Contract) -> tuple[pd.DataFrame, str]:
    """The evaluation data logged beside contract.yaml, else the logged input example; and what it was."""
    if contract.evaluation is not None and origin.startswith("s3://"):
        uri = f"{origin.rsplit('/', 1)[0]}/{contract.evaluation.data}"
        data = deps.store.read(uri, MAX_FILE_BYTES)
        if data is None:
            raise ContractInvalid(f"evaluation.data {contract.evaluation.data!r} is missing beside contract.yaml")
        reader = pd.read_parquet if uri.lower().endswith(".parquet") else pd.read_csv
        return _parsed(reader, data, uri), f"the evaluation data {contract.evaluation.data}"
    example = input_example(deps.store, deps.registry, version)
    if not example or not isinstance(example[0], dict):
        raise Permanent(f"{version} has no reference to measure drift against: log evaluation data "
                        "(the contract's evaluation section) or an input example with the model")
    return pd.DataFrame(example), f"the logged input example ({len(example)} rows)"


def _parsed(reader: Any, data: bytes, uri: str) -> pd.DataFrame:
    try:
        return reader(io.BytesIO(data))
    except (ValueError, OSError) as e:  # pyarrow's and pandas' errors on a file that is not what it says
        raise Permanent(f"{uri} cannot be read: {type(e).__name__}: {str(e)[:200]}") from e


def _compare(contract: Contract, reference: pd.DataFrame, live: pd.DataFrame,
             bins: int) -> tuple[list[drift.FeatureDrift], drift.FeatureDrift | None]:
    logged = [name for name, spec in contract.inputs.items()
              if spec.log and name in reference.columns and f"input.{name}" in live.columns]
    numeric = {name for name in logged if contract.inputs[name].type in _NUMERIC}
    features = drift.by_kind({name: reference[name].tolist() for name in logged},
                             {name: live[f"input.{name}"].tolist() for name in logged}, numeric, bins)
    return features, _prediction_drift(contract, reference, live, bins)


def _prediction_drift(contract: Contract, reference: pd.DataFrame, live: pd.DataFrame,
                      bins: int) -> drift.FeatureDrift | None:
    """The predictions against the evaluation data's truth: a model that still fits predicts its shares."""
    target = contract.evaluation.target if contract.evaluation else None
    if target is None or target not in reference.columns or "output.prediction" not in live.columns:
        return None
    truth = reference[target].tolist()
    if contract.task == "regression":
        return drift.numeric_drift("prediction", truth, live["output.prediction"].tolist(), bins)
    names = "output.label" in live.columns and any(isinstance(value, str) for value in truth)
    return drift.categorical_drift("prediction", truth, live["output.label" if names else "output.prediction"].tolist())


def _tag(deps: Deps, version: VersionInfo, outcome: drift.Verdict) -> None:
    tags = {DRIFT_SUMMARY: outcome.summary[:5000]}
    if outcome.status is not None:
        tags[DRIFT_STATUS] = outcome.status
        before = version.tags.get(DRIFT_STATUS)
        if before != outcome.status and (before is not None or outcome.status == "drifted"):
            log.warning("%s: drift status %s -> %s: %s", version, before or "unmeasured", outcome.status,
                        outcome.summary)
    deps.registry.set_tags(version, tags)
    log.info("%s: drift %s: %s", version, outcome.status or "not judged", outcome.summary)


def _bucket(deps: Deps, origin: str) -> str:
    if deps.settings.inference_log_bucket:
        return deps.settings.inference_log_bucket
    if not origin.startswith("s3://"):
        raise Permanent("the model's artifacts are not in S3, so the wrappers log nowhere by default; "
                        "set INFERENCE_LOG_BUCKET")
    return origin.removeprefix("s3://").split("/", 1)[0]


def _days(start: dt.datetime, end: dt.datetime) -> list[str]:
    first, last = start.astimezone(dt.UTC).date(), end.astimezone(dt.UTC).date()
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def parse_since(text: str) -> dt.timedelta:
    """`90m`, `24h`, `7d` (or plain seconds) as a duration; ValueError naming the form otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"--since {text!r}: give a duration such as 90m, 24h or 7d") from None
    if not 0 < seconds <= 366 * 86_400:
        raise ValueError(f"--since {text!r}: between a second and a year")
    return dt.timedelta(seconds=seconds)


def as_utc(value: Any) -> dt.datetime:
    """An ISO 8601 time (naive means UTC)."""
    moment = dt.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
