"""The 15-minute cycle for one facility: refit the chosen model, predict the next
horizon, add the calibrated bands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from agents.forecasting.errors import ForecastInputError
from agents.forecasting.features import FloatArray, horizon_index, temperature_on
from agents.forecasting.intervals import Calibration, bands, calibrate_in_sample
from agents.forecasting.models import observed_span
from agents.forecasting.select import (
    HORIZON_24_H,
    STEP_15_MIN,
    Choice,
    build_model,
    choose_model,
    prepare,
    supported,
)


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    timestamp: datetime  # UTC, start of the interval
    predicted_load_kw: float
    lower_80_kw: float
    upper_80_kw: float
    lower_95_kw: float
    upper_95_kw: float


@dataclass(frozen=True, slots=True)
class Forecast:
    made_at: datetime
    model: str
    weather_used: bool
    step: timedelta
    timestamps: pd.DatetimeIndex
    predicted_load_kw: FloatArray
    lower_80_kw: FloatArray
    upper_80_kw: FloatArray
    lower_95_kw: FloatArray
    upper_95_kw: FloatArray
    calibration: Calibration

    @property
    def points(self) -> list[ForecastPoint]:
        return [
            ForecastPoint(ts.to_pydatetime(), float(p), float(l8), float(u8), float(l9),
                          float(u9))
            for ts, p, l8, u8, l9, u9 in zip(
                self.timestamps, self.predicted_load_kw, self.lower_80_kw, self.upper_80_kw,
                self.lower_95_kw, self.upper_95_kw, strict=True)
        ]


def forecast(
    history_kw: pd.Series,
    *,
    now: datetime,
    timezone: str,
    temperature_c: pd.Series | None = None,
    country: str | None = None,
    model: str | None = None,
    choice: Choice | None = None,
    horizon: timedelta = HORIZON_24_H,
    step: timedelta = STEP_15_MIN,
) -> Forecast:
    """Forecast the intervals from ``now`` to ``now + horizon`` (see the package docstring).

    The model is ``model`` if given, else ``choice.model``, else a fresh ``choose_model`` (a
    backtest: slow, cache a Choice instead). A model the history cannot support yet is
    replaced along the fallback chain. Bands come from ``choice.calibration`` when it belongs
    to the model used, else from in-sample residuals (widened).
    """
    if horizon <= timedelta(0) or step <= timedelta(0) or horizon < step:
        raise ForecastInputError("horizon and step must be positive, horizon >= step")
    load, ctx = prepare(history_kw, now=now, temperature_c=temperature_c, timezone=timezone,
                        country=country, step=step, horizon=horizon)
    if model is None and choice is None:
        choice = choose_model(history_kw, temperature_c=temperature_c, timezone=timezone,
                              country=country, now=now, step=step, horizon=horizon)
    name = model if model is not None else choice.model if choice is not None else ""
    wanted = build_model(name)
    span = observed_span(load)
    if wanted.min_history > span:
        name = supported([name], span)[-1]
    made_at = pd.Timestamp(now).tz_convert("UTC")
    targets = horizon_index(made_at, horizon=horizon, step=step)
    if ctx.temperature_c is not None and temperature_on(targets, ctx.temperature_c) is None:
        ctx = ctx.__class__(ctx.timezone, ctx.country, ctx.step, None)
    fitted = build_model(name).fit(load, ctx)
    predicted = fitted.predict(targets)
    if choice is not None and choice.model == name:
        calibration = choice.calibration
    else:
        calibration = calibrate_in_sample(fitted.in_sample_residuals_kw)
    lead_s = ((targets - made_at) / pd.Timedelta(seconds=1)).to_numpy(dtype="float64")
    b = bands(calibration, predicted, lead_s)
    return Forecast(made_at=made_at.to_pydatetime(), model=name,
                    weather_used=fitted.weather_used, step=step, timestamps=targets,
                    predicted_load_kw=np.asarray(predicted, dtype="float64"),
                    lower_80_kw=b.lower_80_kw, upper_80_kw=b.upper_80_kw,
                    lower_95_kw=b.lower_95_kw, upper_95_kw=b.upper_95_kw,
                    calibration=calibration)
