"""Accuracy metrics and conformal quantiles, with the arithmetic worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from agents.forecasting.intervals import Calibration, bands, bucket_of, conformal_quantile
from agents.forecasting.metrics import (
    coverage_pct,
    cv_rmse_pct,
    mape_pct,
    mean_pinball_kw,
    nmbe_pct,
    pinball_kw,
)

pytestmark = pytest.mark.unit

ACTUAL = np.array([10.0, 20.0, 30.0, 40.0])
PREDICTED = np.array([12.0, 18.0, 30.0, 36.0])
# errors actual - predicted: -2, 2, 0, 4; mean(actual) = 25


def test_mape() -> None:
    # |e|/a = 0.2, 0.1, 0, 0.1 -> mean 0.1 -> 10 %
    assert mape_pct(ACTUAL, PREDICTED) == pytest.approx(10.0)


def test_mape_skips_zero_actuals() -> None:
    # the zero actual has no percentage error; 5 vs 4 -> 20 %
    assert mape_pct(np.array([0.0, 5.0]), np.array([1.0, 4.0])) == pytest.approx(20.0)


def test_cv_rmse() -> None:
    # squares 4, 4, 0, 16 -> mean 6 -> RMSE 2.449..; / 25 -> 9.798 %
    assert cv_rmse_pct(ACTUAL, PREDICTED) == pytest.approx(np.sqrt(6.0) / 25.0 * 100.0)
    assert cv_rmse_pct(ACTUAL, PREDICTED) == pytest.approx(9.798, abs=1e-3)


def test_nmbe() -> None:
    # sum(e) = 4; n * mean = 4 * 25 = 100 -> +4 % (forecast low)
    assert nmbe_pct(ACTUAL, PREDICTED) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # e = a - p = -2, 2, 0, 4; loss = q*e if e >= 0 else (q-1)*e
        (0.5, (1.0 + 1.0 + 0.0 + 2.0) / 4),  # half the absolute error: 1.0
        (0.9, (0.2 + 1.8 + 0.0 + 3.6) / 4),  # under-forecast costs 0.9, over 0.1: 1.4
        (0.1, (1.8 + 0.2 + 0.0 + 0.4) / 4),  # the mirror: 0.6
    ],
)
def test_pinball(q: float, expected: float) -> None:
    assert pinball_kw(ACTUAL, PREDICTED, q) == pytest.approx(expected)


def test_mean_pinball_of_a_perfect_forecast_is_zero() -> None:
    same = {q: ACTUAL for q in (0.025, 0.1, 0.5, 0.9, 0.975)}
    assert mean_pinball_kw(ACTUAL, same) == 0.0


def test_coverage() -> None:
    # bounds [9, 21] hold 10 and 20, not 30 or 40 -> 50 %; the bounds themselves count
    lower, upper = np.full(4, 9.0), np.full(4, 21.0)
    assert coverage_pct(ACTUAL, lower, upper) == 50.0
    assert coverage_pct(ACTUAL, ACTUAL, ACTUAL) == 100.0


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # residuals 1..9 (n = 9): upper level ceil(10 * 0.9) / 9 = 1 -> the largest, 9
        (0.9, 9.0),
        # lower level floor(10 * 0.1) / 9 = 1/9 -> quantile at 1/9 of 1..9 with "lower" -> 1
        (0.1, 1.0),
        # the median: ceil(10 * 0.5) / 9 = 5/9 -> position 4.44 of 0..8, "higher" takes 6
        (0.5, 6.0),
    ],
)
def test_conformal_quantile_moves_outwards(q: float, expected: float) -> None:
    assert conformal_quantile(np.arange(1.0, 10.0), q) == expected


def test_bands_use_the_bucket_of_the_lead() -> None:
    cal = Calibration(offsets_kw=((-1.0, -0.5, 0.5, 1.0), (-2.0, -1.0, 1.0, 2.0),
                                  (-3.0, -2.0, 2.0, 3.0), (-4.0, -3.0, 3.0, 4.0),
                                  (-5.0, -4.0, 4.0, 5.0)), source="out_of_sample",
                      residual_count=100)
    # leads 0 s and 3,600 s are in the 0-1 h bucket, 3,601 s in 1-3 h, 13 h beyond 12 h
    lead = np.array([0.0, 3600.0, 3601.0, 13 * 3600.0])
    assert bucket_of(lead).tolist() == [0, 0, 1, 4]
    b = bands(cal, np.full(4, 100.0), lead)
    assert b.lower_80_kw.tolist() == [99.5, 99.5, 99.0, 96.0]
    assert b.upper_95_kw.tolist() == [101.0, 101.0, 102.0, 105.0]
