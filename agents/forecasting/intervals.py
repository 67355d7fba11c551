"""Prediction intervals from out-of-sample residuals (split conformal, per lead-time bucket).

The rolling-origin backtest leaves residuals ``actual - predicted`` of forecasts the model made
without seeing the actuals. Their empirical quantiles, per lead-time bucket (errors grow with
the lead), are added to the point forecast: the 80 % band is [q(0.1), q(0.9)], the 95 % band
[q(0.025), q(0.975)], with the finite-sample conformal correction ceil((n + 1) p) / n. Bands may
be asymmetric (loads have skewed errors) and need no distributional assumption.

Without a backtest (short history) only in-sample residuals exist; they understate the
out-of-sample error, so those bands are widened by ``IN_SAMPLE_INFLATION``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agents.forecasting.features import FloatArray

BUCKET_EDGES_S = (3_600, 3 * 3_600, 6 * 3_600, 12 * 3_600)
"""Upper edges of the lead-time buckets (0-1 h, 1-3 h, 3-6 h, 6-12 h, beyond 12 h)."""
MIN_BUCKET_RESIDUALS = 50
IN_SAMPLE_INFLATION = 1.5
QUANTILES = (0.025, 0.1, 0.9, 0.975)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Offsets in kW to add to the point forecast, per lead-time bucket:
    ``offsets_kw[bucket] = (lower_95, lower_80, upper_80, upper_95)``."""

    offsets_kw: tuple[tuple[float, float, float, float], ...]
    source: Literal["out_of_sample", "in_sample"]
    residual_count: int


def bucket_of(lead_s: FloatArray) -> np.ndarray:
    return np.searchsorted(np.asarray(BUCKET_EDGES_S, dtype="float64"), lead_s, side="left")


def conformal_quantile(residuals: FloatArray, q: float) -> float:
    """The ``q`` quantile with the split-conformal finite-sample correction: the level moves
    outwards to ceil((n + 1) q) / n (upper) or floor((n + 1) q) / n (lower)."""
    n = len(residuals)
    if q >= 0.5:
        level = min(1.0, math.ceil((n + 1) * q) / n)
        return float(np.quantile(residuals, level, method="higher"))
    level = max(0.0, math.floor((n + 1) * q) / n)
    return float(np.quantile(residuals, level, method="lower"))


def _offsets(residuals: FloatArray, scale: float) -> tuple[float, float, float, float]:
    lo95, lo80, hi80, hi95 = (conformal_quantile(residuals, q) * scale for q in QUANTILES)
    return lo95, lo80, hi80, hi95


def calibrate(lead_s: FloatArray, residuals_kw: FloatArray) -> Calibration:
    """Out-of-sample calibration. A bucket with fewer than ``MIN_BUCKET_RESIDUALS`` borrows
    those of the following buckets (hourly data has one 0-1 h residual per origin)."""
    if len(residuals_kw) == 0:
        return Calibration(((0.0, 0.0, 0.0, 0.0),) * (len(BUCKET_EDGES_S) + 1), "in_sample", 0)
    buckets = bucket_of(lead_s)
    offsets = []
    count = len(BUCKET_EDGES_S) + 1
    for b in range(count):
        chosen = buckets == b
        upto = b
        while chosen.sum() < MIN_BUCKET_RESIDUALS and upto < count - 1:
            upto += 1
            chosen = chosen | (buckets == upto)
        lower = b
        while chosen.sum() < MIN_BUCKET_RESIDUALS and lower > 0:
            lower -= 1
            chosen = chosen | (buckets == lower)
        offsets.append(_offsets(residuals_kw[chosen], 1.0))
    return Calibration(tuple(offsets), "out_of_sample", len(residuals_kw))


def calibrate_in_sample(residuals_kw: FloatArray) -> Calibration:
    """Fallback bands from in-sample residuals, widened: the same for every lead."""
    finite = residuals_kw[np.isfinite(residuals_kw)]
    if len(finite) < 2:
        offsets = (0.0, 0.0, 0.0, 0.0)
    else:
        centred = finite - float(np.mean(finite))
        offsets = _offsets(centred, IN_SAMPLE_INFLATION)
    return Calibration((offsets,) * (len(BUCKET_EDGES_S) + 1), "in_sample", len(finite))


@dataclass(frozen=True, slots=True)
class Bands:
    lower_95_kw: FloatArray
    lower_80_kw: FloatArray
    upper_80_kw: FloatArray
    upper_95_kw: FloatArray


def bands(calibration: Calibration, predicted_kw: FloatArray, lead_s: FloatArray) -> Bands:
    table = np.asarray(calibration.offsets_kw, dtype="float64")
    rows = table[bucket_of(lead_s)]
    lo95, lo80, hi80, hi95 = (predicted_kw + rows[:, i] for i in range(4))
    # Quantile estimates could cross on tiny samples; keep the bands nested.
    lo80 = np.minimum(lo80, hi80)
    return Bands(np.minimum(lo95, lo80), lo80, hi80, np.maximum(hi95, hi80))
