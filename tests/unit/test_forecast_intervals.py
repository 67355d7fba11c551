"""Intervals calibrated on out-of-sample residuals cover their nominal level."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest

from agents.forecasting import backtest, build_model, prepare, rolling_origins

pytestmark = pytest.mark.unit


def test_coverage_is_honest_on_a_synthetic_series() -> None:
    # Hourly daily cycle plus AR(1) noise: the 80 % and 95 % bands of the rolling backtest
    # (each origin calibrated on the 20 origins before it) should cover about 80 % and 95 %.
    rng = np.random.default_rng(3)
    index = pd.date_range("2026-01-05T00:00Z", periods=24 * 90, freq="1h")
    noise = np.zeros(len(index))
    for i in range(1, len(index)):
        noise[i] = 0.6 * noise[i - 1] + rng.normal(0, 4)
    hour = index.hour.to_numpy(dtype="float64")
    load = pd.Series(100 + 30 * np.sin(2 * np.pi * hour / 24) + noise, index=index)
    step, horizon = timedelta(hours=1), timedelta(hours=24)
    series, ctx = prepare(load, now=index[-1] + pd.Timedelta(hours=1), temperature_c=None,
                          timezone="UTC", country=None, step=step, horizon=horizon)
    origins = rolling_origins(series, horizon=horizon, min_history=timedelta(days=14),
                              count=60)
    result = backtest(series, ctx, [build_model("fourier_ols"), build_model("seasonal_naive")],
                      horizon=horizon, origins=origins, calibration_origins=20)
    for score in result.scores.values():
        assert 73.0 <= score.coverage_80_pct <= 87.0, score
        assert 90.0 <= score.coverage_95_pct <= 99.0, score
    # the regression sees through the noise the naive forecast copies: lower error
    assert result.scores["fourier_ols"].cv_rmse_pct < result.scores["seasonal_naive"].cv_rmse_pct
