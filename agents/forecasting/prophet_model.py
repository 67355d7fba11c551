"""``prophet``: Meta's Prophet with daily and weekly seasonality, the country's holidays and
temperature as an extra regressor.

A fit costs 0.2-1 s (Stan), ten times a whole regression forecast, so Prophet is a backtest
candidate on request (``candidates=`` / ``--models``), not in the default set that
``choose_model`` runs for every facility. It is fitted on hourly means of the last four weeks,
in local wall-clock time (Prophet wants naive timestamps).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from agents.forecasting.features import Context, FloatArray, temperature_on
from agents.forecasting.models import Fitted, local_wall_clock

PROPHET = "prophet"
_HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class _FittedProphet:
    model: Any
    ctx: Context
    weather_used: bool
    residuals: FloatArray

    @property
    def in_sample_residuals_kw(self) -> FloatArray:
        return self.residuals

    def predict(self, index: pd.DatetimeIndex) -> FloatArray:
        frame = pd.DataFrame({"ds": local_wall_clock(index, self.ctx.timezone)})
        if self.weather_used:
            frame["temperature_c"] = temperature_on(index, self.ctx.temperature_c)
        out = self.model.predict(frame)
        return np.asarray(out["yhat"].to_numpy(), dtype="float64")


@dataclass(frozen=True, slots=True)
class ProphetModel:
    name: str = PROPHET
    min_history: timedelta = timedelta(days=14)
    train_window: timedelta = timedelta(days=28)

    def fit(self, load_kw: pd.Series, ctx: Context) -> Fitted:
        from prophet import Prophet  # imported on use: it loads Stan and plotting backends

        logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
        end = load_kw.index[-1]
        window = load_kw[load_kw.index > end - pd.Timedelta(self.train_window)]
        hourly = window.resample(_HOUR).mean().dropna()
        index = pd.DatetimeIndex(hourly.index)
        frame = pd.DataFrame({"ds": local_wall_clock(index, ctx.timezone),
                              "y": hourly.to_numpy(dtype="float64")})
        temp = temperature_on(index, ctx.temperature_c)
        model = Prophet(daily_seasonality=True, weekly_seasonality=True,
                        yearly_seasonality=False, uncertainty_samples=0)
        if ctx.country:
            model.add_country_holidays(country_name=ctx.country)
        if temp is not None:
            frame["temperature_c"] = temp
            model.add_regressor("temperature_c")
        model.fit(frame)
        fitted = np.asarray(model.predict(frame.drop(columns="y"))["yhat"], dtype="float64")
        return _FittedProphet(model, ctx, temp is not None,
                              frame["y"].to_numpy(dtype="float64") - fitted)
