"""Progressive delivery's pure parts, table-tested: the strict `rollout` section of the contract, and the
verdicts on a candidate's figures (hold, next step, promote, roll back) with the summary they leave, and how
the local front compares two answers to the same request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devstack.models import IRIS_CONTRACT
from model_wrapper.contract.comparison import compare
from model_wrapper.contract.rollout import Rollout
from model_wrapper.contract.spec import ContractError, parse_contract
from watcher.decide.progressive import (
    Comparison,
    Figures,
    Step,
    WrapperFigures,
    histogram_quantile,
    judge,
    mlflow_metrics,
    summary,
)

REGRESSION = "task: regression\ninputs:\n  x: {type: number}\n"
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("section", "named"), [
    ("{strategy: blue-green}", "rollout.strategy"),
    ("{strategy: canary}", "canary needs steps"),
    ("{strategy: shadow, steps: [10]}", "steps apply to canary only"),
    ("{strategy: canary, steps: [50, 10]}", "steps must rise"),
    ("{strategy: canary, steps: [10, 100]}", "between 1 and 99"),
    ("{strategy: canary, steps: [0]}", "between 1 and 99"),
    ("{strategy: shadow, sample: 0}", "rollout.sample"),
    ("{strategy: shadow, sample: 1.5}", "rollout.sample"),
    ("{strategy: shadow, analysis: {interval: 0}}", "rollout.analysis.interval"),
    ("{strategy: shadow, analysis: {min_requests: -5}}", "rollout.analysis.min_requests"),
    ("{strategy: shadow, analysis: {max_error_rate: 1.5}}", "rollout.analysis.max_error_rate"),
    ("{strategy: shadow, analysis: {max_p99_ms: .nan}}", "rollout.analysis.max_p99_ms"),
    ("{strategy: shadow, analysis: {min_agreement: 2}}", "rollout.analysis.min_agreement"),
    ("{strategy: shadow, analysis: {max_mean_abs_diff: 0.5}}", "max_mean_abs_diff compares numbers"),
    ("{strategy: shadow, analysis: {max_eror_rate: 0.1}}", "rollout.analysis.max_eror_rate: unknown key"),
    ("{strategy: shadow, step: [10]}", "rollout.step: unknown key"),
])
def test_a_wrong_rollout_section_is_a_contract_error_naming_the_key(section: str, named: str) -> None:
    with pytest.raises(ContractError, match=r"contract\.yaml is invalid") as caught:
        parse_contract(f"{IRIS_CONTRACT}rollout: {section}\n".encode())
    assert named in str(caught.value)


def test_agreement_is_refused_for_a_regression_and_the_section_is_optional() -> None:
    with pytest.raises(ContractError, match="min_agreement compares classes"):
        parse_contract(f"{REGRESSION}rollout: {{strategy: shadow, analysis: {{min_agreement: 0.9}}}}".encode())
    assert parse_contract(IRIS_CONTRACT.encode()).rollout is None
    parsed = parse_contract(f"{IRIS_CONTRACT}rollout: {{strategy: canary, steps: [10, 50]}}\n".encode()).rollout
    assert parsed is not None and parsed.stages == ["canary 10%", "canary 50%"]
    assert (parsed.analysis.interval, parsed.analysis.min_requests, parsed.analysis.max_error_rate) == (60, 200, 0.01)


CANARY = Rollout.model_validate({"strategy": "canary", "steps": [10, 50], "analysis": {
    "interval": 60, "min_requests": 100, "max_error_rate": 0.01, "max_p99_ms": 250, "min_agreement": 0.95}})
FAST = ((0.01, 90), (0.1, 100), (float("inf"), 100))
SLOW = ((0.1, 10), (0.5, 50), (1.0, 100), (float("inf"), 100))


def figures(requests: int = 300, errors: int = 0, buckets: tuple[tuple[float, float], ...] = FAST,
            compared: int = 300, agreed: int = 300) -> Figures:
    return Figures(2, 1, WrapperFigures(requests, errors, buckets), WrapperFigures(900, 0, FAST),
                   Comparison(compared, agreed))


@pytest.mark.parametrize(("step", "seen", "now", "expected"), [
    (Step(0, T0, 250), figures(), T0 + timedelta(seconds=90), ("hold", "50 of 100 requests in this step")),
    (Step(0, T0, 0), figures(), T0 + timedelta(seconds=30), ("hold", "30 of 60 s of this step")),
    (Step(0, T0, 0), figures(), T0 + timedelta(seconds=60), ("advance", "")),
    (Step(1, T0, 0), figures(), T0 + timedelta(seconds=60), ("promote", "")),
    (Step(0, T0, 0), figures(errors=60), T0, ("reject", "5xx rate 20.0% > 1.0% allowed (60 of 300)")),
    (Step(0, T0, 0), figures(buckets=SLOW), T0, ("reject", "p99 990 ms > 250 ms allowed")),
    (Step(0, T0, 0), figures(agreed=270), T0, ("reject", "agreement with live 90.0% < 95.0% required (270 of 300)")),
    (Step(0, T0, 0), figures(compared=0, agreed=0), T0 + timedelta(hours=1), ("hold", "no request compared yet")),
    # A restarted candidate's counters start again below the step's baseline: its own count is what it answered.
    (Step(0, T0, 5000), figures(), T0 + timedelta(seconds=60), ("advance", "")),
])
def test_the_verdict_holds_until_the_step_has_its_requests_and_time_and_rejects_a_breach_at_once(
        step: Step, seen: Figures, now: datetime, expected: tuple[str, str]) -> None:
    move = judge(CANARY, step, seen, now)
    assert (move.kind, "; ".join(move.reasons)) == expected
    if move.kind == "advance":
        assert move.step == Step(step.index + 1, now, seen.candidate.requests)


def test_the_step_survives_as_its_tag_text() -> None:
    step = Step(1, T0, 420)
    assert str(step) == "step=1 since=2026-12-06T09:00:00+00:00 requests=420"
    assert Step.parse(str(step)) == step
    assert Step.parse("") is None and Step.parse("step=x since=now requests=1") is None


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    # Prometheus' own cases (promql/quantile_test.go style): linear inside the bucket holding the rank.
    (0.5, ((1.0, 0), (2.0, 10), (float("inf"), 10)), 1.5),
    (0.99, ((0.1, 50), (0.2, 100), (float("inf"), 100)), 0.198),
    (0.99, ((0.1, 50), (float("inf"), 100)), 0.1),
    (0.99, (), None),
    (0.99, ((0.1, 0), (float("inf"), 0)), None),
])
def test_p99_is_estimated_as_prometheus_histogram_quantile_does(
        q: float, buckets: tuple[tuple[float, float], ...], expected: float | None) -> None:
    assert histogram_quantile(q, buckets) == (pytest.approx(expected) if expected is not None else None)


def test_the_summary_and_the_mlflow_metrics_carry_both_versions_figures() -> None:
    seen = Figures(2, 1, WrapperFigures(300, 3, FAST), WrapperFigures(900, 0, FAST), Comparison(200, 196, rescued=3))
    assert summary(seen) == ("candidate v2: 300 requests, 5xx 1.0%, p99 91 ms; agreement 98.0% of 200 compared; "
                             "3 failed answers served by live instead | live v1: 900 requests, 5xx 0.0%, p99 91 ms")
    metrics = mlflow_metrics(seen)
    assert metrics["error_rate"] == pytest.approx(0.01) and metrics["agreement"] == pytest.approx(0.98)
    assert "mean_abs_diff" not in metrics


def test_a_regressions_summary_and_metrics_leave_out_the_share_of_equal_answers() -> None:
    seen = Figures(3, 1, WrapperFigures(177, 0, FAST), WrapperFigures(900, 0, FAST), Comparison(177, 0, 6636.0, 177))
    assert summary(seen, agreement=False) == ("candidate v3: 177 requests, 5xx 0.0%, p99 91 ms; 177 compared; "
                                              "mean |diff| 37.49 | live v1: 900 requests, 5xx 0.0%, p99 91 ms")
    metrics = mlflow_metrics(seen, agreement=False)
    assert "agreement" not in metrics and metrics["mean_abs_diff"] == pytest.approx(37.49, abs=0.01)


@pytest.mark.parametrize(("live", "candidate", "expected"), [
    (b'{"predictions": [0, 2]}', b'{"predictions": [0, 2]}', (True, 2.0 * 0, 2)),
    (b'{"predictions": [0, 2]}', b'{"predictions": [0, 1]}', (False, 1.0, 2)),
    (b'{"predictions": [1.5], "probabilities": [[0.2]]}', b'{"predictions": [2.0]}', (False, 0.5, 1)),
    (b'{"predictions": [{"a": 1, "b": 2}]}', b'{"predictions": [{"b": 2, "a": 1}]}', (True, 0.0, 2)),
    (b'{"outputs": [{"name": "output-1", "data": [3, 4]}]}', b'{"outputs": [{"data": [3, 5]}]}', (False, 1.0, 2)),
    (b'{"predictions": ["setosa"]}', b'{"predictions": ["setosa"]}', (True, 0.0, 0)),
    (b'{"error": "x"}', b'{"predictions": [1]}', None),
    (b"not json", b'{"predictions": [1]}', None),
])
def test_two_answers_are_compared_by_their_predictions(live: bytes, candidate: bytes,
                                                       expected: tuple[bool, float, int] | None) -> None:
    assert compare(live, candidate) == expected
