"""The pure drift rules: PSI on quantile bins and on categories, the verdict and its summary line."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from model_wrapper.contract.monitoring import Drift
from watcher.decide.drift import FeatureDrift, Window, categorical_drift, day_span, numeric_drift, verdict

RNG = np.random.default_rng(3)
REFERENCE = RNG.normal(10, 2, 5000).tolist()
DAY = dt.datetime(2026, 12, 5, 8, tzinfo=dt.UTC)


def _window(rows: int = 12_408, requests: int = 12_408) -> Window:
    return Window(DAY, DAY + dt.timedelta(days=1), requests, rows)


@pytest.mark.parametrize(("shift", "low", "high"), [(0.0, 0.0, 0.02), (0.25, 0.02, 0.2), (2.0, 1.0, 20.0)])
def test_psi_grows_with_the_shift_of_the_mean_in_standard_deviations(shift: float, low: float, high: float) -> None:
    live = (RNG.normal(10, 2, 5000) + shift * 2).tolist()

    assert low <= numeric_drift("x", REFERENCE, live, 10).psi <= high


def test_values_outside_the_reference_fall_in_the_outer_bins_and_nan_is_left_out() -> None:
    found = numeric_drift("x", [1.0, 2.0, 3.0, 4.0], [100.0, 100.0, float("nan")], 4)

    assert found.live[-1] == 1.0 and found.psi > 1


def test_a_category_the_reference_never_had_counts_as_other() -> None:
    found = categorical_drift("colour", ["red", "blue"] * 50, ["green"] * 100)

    assert found.bins == ("blue", "red", "(other)") and found.live == (0.0, 0.0, 1.0) and found.psi > 1


def test_the_verdict_names_the_drifted_feature_in_the_summary_line() -> None:
    features = [FeatureDrift("bmi", 0.31, (), (), ()), FeatureDrift("age", 0.25, (), (), ()),
                *(FeatureDrift(f"f{i}", 0.01, (), (), ()) for i in range(7))]

    outcome = verdict(features, None, _window(), Drift(max_psi=0.2))

    assert outcome.status == "drifted"
    assert outcome.summary == "max PSI 0.31 (bmi); 2 of 9 features drifted; 12,408 requests 2026-12-05..06"
    assert [f.name for f in outcome.drifted] == ["bmi", "age"]


def test_features_may_drift_up_to_the_allowed_count_and_too_few_requests_give_no_verdict() -> None:
    features = [FeatureDrift("bmi", 0.31, (), (), ())]

    assert verdict(features, None, _window(), Drift(max_drifted_features=1)).status == "ok"
    assert verdict(features, None, _window(rows=40, requests=4), Drift(min_requests=100)).status is None


def test_a_shifted_prediction_distribution_alone_is_drift() -> None:
    prediction = FeatureDrift("prediction", 0.5, (), (), ())

    outcome = verdict([FeatureDrift("bmi", 0.01, (), (), ())], prediction, _window(), Drift())

    assert outcome.status == "drifted" and "prediction PSI 0.50" in outcome.summary


@pytest.mark.parametrize(("start", "end", "shown"), [
    ((2026, 12, 5), (2026, 12, 6), "2026-12-05..06"), ((2026, 11, 30), (2026, 12, 1), "2026-11-30..12-01"),
    ((2025, 12, 31), (2026, 1, 1), "2025-12-31..2026-01-01"), ((2026, 12, 5), (2026, 12, 5), "2026-12-05")])
def test_the_window_is_written_as_a_day_span(start: tuple[int, int, int], end: tuple[int, int, int],
                                             shown: str) -> None:
    assert day_span(dt.datetime(*start, tzinfo=dt.UTC), dt.datetime(*end, 12, tzinfo=dt.UTC)) == shown
