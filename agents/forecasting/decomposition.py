"""``mstl_ets``: statsmodels MSTL (daily and weekly seasonal components) with exponential
smoothing of what remains.

MSTL costs seconds on 60 days of quarter hours (5,760 points, two STL passes per period), so
the model works on hourly means of the last four weeks (672 points, ~0.1 s) and holds each
hour's forecast over its quarter hours. The seasonal components are carried forward from one
day and one week before; the deseasonalised rest (trend + remainder) is forecast by
additive damped-trend exponential smoothing. It uses no temperature: it is the candidate that
does well when weather does not drive the load or is not available.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from statsmodels.tsa.holtwinters import ExponentialSmoothing
from statsmodels.tsa.seasonal import MSTL

from agents.forecasting.features import Context, FloatArray
from agents.forecasting.models import Fitted

MSTL_ETS = "mstl_ets"
_HOUR = pd.Timedelta(hours=1)
_PERIODS_H = (24, 168)


@dataclass(frozen=True, slots=True)
class _FittedMstl:
    seasonal_kw: pd.DataFrame  # hourly, one column per period
    rest_forecast_kw: pd.Series  # hourly, after the last hour
    residuals: FloatArray
    weather_used: bool = False

    @property
    def in_sample_residuals_kw(self) -> FloatArray:
        return self.residuals

    def predict(self, index: pd.DatetimeIndex) -> FloatArray:
        hours = index.floor(_HOUR)
        total = self.rest_forecast_kw.reindex(hours).ffill().bfill().to_numpy(dtype="float64")
        last = self.seasonal_kw.index[-1]
        for col, period in zip(self.seasonal_kw.columns, _PERIODS_H, strict=True):
            lag = pd.Timedelta(hours=period)
            periods_back = np.ceil((hours - last) / lag)
            source = hours - lag * periods_back.to_numpy(dtype="int64")
            total = total + self.seasonal_kw[col].reindex(source).to_numpy(dtype="float64")
        return np.asarray(total, dtype="float64")


@dataclass(frozen=True, slots=True)
class MstlEts:
    name: str = MSTL_ETS
    min_history: timedelta = timedelta(days=14)
    train_window: timedelta = timedelta(days=28)

    def fit(self, load_kw: pd.Series, ctx: Context) -> Fitted:
        end = load_kw.index[-1]
        window = load_kw[load_kw.index > end - pd.Timedelta(self.train_window)]
        hourly = window.resample(_HOUR).mean()
        # MSTL needs a complete series: gaps are filled from the same hour a week or a day
        # before, then by interpolation.
        filled = hourly.copy()
        for lag_h in (168, 24):
            filled = filled.fillna(hourly.shift(lag_h))
        filled = filled.interpolate(limit_direction="both")
        y = filled.to_numpy(dtype="float64")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = MSTL(y, periods=_PERIODS_H, iterate=1,
                       stl_kwargs={"seasonal_deg": 0, "robust": False}).fit()
            seasonal = np.asarray(res.seasonal, dtype="float64").reshape(len(y), -1)
            rest = y - seasonal.sum(axis=1)
            ets = ExponentialSmoothing(rest, trend="add", damped_trend=True,
                                       initialization_method="estimated").fit(use_brute=False)
            horizon_h = 48
            rest_fc = np.asarray(ets.forecast(horizon_h), dtype="float64")
        future = pd.date_range(hourly.index[-1] + _HOUR, periods=horizon_h, freq=_HOUR)
        observed = ~np.isnan(hourly.to_numpy(dtype="float64"))
        fitted_values = seasonal.sum(axis=1) + np.asarray(ets.fittedvalues, dtype="float64")
        return _FittedMstl(
            seasonal_kw=pd.DataFrame(seasonal, index=hourly.index,
                                     columns=[f"s{p}" for p in _PERIODS_H]),
            rest_forecast_kw=pd.Series(rest_fc, index=future),
            residuals=(y - fitted_values)[observed])
