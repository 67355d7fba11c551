"""Forecast accuracy: MAPE, ASHRAE Guideline 14's CV(RMSE) and NMBE, pinball loss, coverage.

All take aligned arrays of observed points (NaN-free). Percentages are returned as percent.
"""

from __future__ import annotations

import numpy as np

from agents.forecasting.features import FloatArray

PINBALL_QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.975)


def mape_pct(actual: FloatArray, predicted: FloatArray) -> float:
    """Mean absolute percentage error over the points whose actual is not zero (a zero
    actual has no percentage error; metered loads of 0 kW happen)."""
    nonzero = actual != 0
    if not nonzero.any():
        return float("nan")
    return float(np.mean(np.abs(actual[nonzero] - predicted[nonzero]) / np.abs(actual[nonzero]))
                 * 100.0)


def cv_rmse_pct(actual: FloatArray, predicted: FloatArray) -> float:
    """RMSE / mean(actual), Guideline 14 (hourly calibration accepted at <= 30 %)."""
    rmse = float(np.sqrt(np.mean((actual - predicted) ** 2)))
    return rmse / float(np.mean(actual)) * 100.0


def nmbe_pct(actual: FloatArray, predicted: FloatArray) -> float:
    """sum(actual - predicted) / (n * mean(actual)); positive means the forecast is low.
    Guideline 14 accepts +-10 % hourly."""
    return float(np.sum(actual - predicted)) / (len(actual) * float(np.mean(actual))) * 100.0


def pinball_kw(actual: FloatArray, quantile_kw: FloatArray, q: float) -> float:
    """Quantile loss of the ``q`` quantile forecast, in kW."""
    diff = actual - quantile_kw
    return float(np.mean(np.maximum(q * diff, (q - 1.0) * diff)))


def mean_pinball_kw(actual: FloatArray, bands: dict[float, FloatArray]) -> float:
    """Pinball loss averaged over the quantiles the forecast gives: the 80 % and 95 % bounds
    are the 0.1/0.9 and 0.025/0.975 quantiles, the point forecast the median."""
    return float(np.mean([pinball_kw(actual, bands[q], q) for q in PINBALL_QUANTILES]))


def coverage_pct(actual: FloatArray, lower_kw: FloatArray, upper_kw: FloatArray) -> float:
    """Share of actuals inside [lower, upper]: honest intervals cover their nominal level."""
    return float(np.mean((actual >= lower_kw) & (actual <= upper_kw)) * 100.0)
