"""Choosing a model per facility, and the fallback chain for short history.

``choose_model`` runs the rolling-origin backtest over the candidates the history can support
and keeps the one with the lowest CV(RMSE), with the interval calibration of its latest
origins. The agent runs it rarely (daily) and caches the ``Choice``; the 15-minute cycle only
refits the chosen model (``forecast(..., choice=choice)``).

Fallback chain, by the observed span of history: a candidate takes part when its
``min_history`` plus a week of backtest origins fits (the weekly models from 21 days);
otherwise ``daily_profile`` from 1 day, otherwise ``persistence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from agents.forecasting.backtest import (
    ModelScore,
    backtest,
    best,
    rolling_origins,
)
from agents.forecasting.decomposition import MSTL_ETS, MstlEts
from agents.forecasting.errors import ForecastInputError, InsufficientHistory
from agents.forecasting.features import Context, temperature_grid, to_grid
from agents.forecasting.intervals import Calibration, calibrate_in_sample
from agents.forecasting.models import (
    PERSISTENCE,
    SEASONAL_NAIVE,
    Model,
    Persistence,
    SeasonalNaive,
    observed_span,
)
from agents.forecasting.prophet_model import PROPHET, ProphetModel
from agents.forecasting.regression import (
    DAILY_PROFILE,
    FOURIER_OLS,
    FourierRegression,
    daily_profile,
)

DEFAULT_CANDIDATES = (FOURIER_OLS, MSTL_ETS, SEASONAL_NAIVE)
ALL_MODELS = (FOURIER_OLS, MSTL_ETS, PROPHET, SEASONAL_NAIVE, DAILY_PROFILE, PERSISTENCE)
BACKTEST_WEEK = timedelta(days=7)
STEP_15_MIN = timedelta(minutes=15)
HORIZON_24_H = timedelta(hours=24)


def build_model(name: str) -> Model:
    models: dict[str, Model] = {
        FOURIER_OLS: FourierRegression(),
        MSTL_ETS: MstlEts(),
        PROPHET: ProphetModel(),
        SEASONAL_NAIVE: SeasonalNaive(),
        DAILY_PROFILE: daily_profile(),
        PERSISTENCE: Persistence(),
    }
    if name not in models:
        raise ForecastInputError(f"unknown model {name!r}; known: {', '.join(ALL_MODELS)}")
    return models[name]


@dataclass(frozen=True, slots=True)
class Choice:
    """What ``choose_model`` decided for one facility; cache it and pass it to ``forecast``."""

    model: str
    calibration: Calibration  # interval offsets for ``model``
    scores: tuple[ModelScore, ...]  # every candidate's backtest scores, empty without one
    made_at: datetime
    step: timedelta


def supported(candidates: Sequence[str], span: timedelta) -> list[str]:
    """The fallback chain: the candidates the history supports; when some are not, the
    ``daily_profile`` competes too (from 1 day); with less than a day, ``persistence``."""
    fit = [n for n in candidates if build_model(n).min_history + BACKTEST_WEEK <= span]
    if len(fit) == len(candidates):
        return fit
    if span >= timedelta(days=1):
        return [*fit, DAILY_PROFILE] if DAILY_PROFILE not in fit else fit
    return fit or [PERSISTENCE]


def prepare(
    history_kw: pd.Series,
    *,
    now: datetime | pd.Timestamp,
    temperature_c: pd.Series | None,
    timezone: str,
    country: str | None,
    step: timedelta,
    horizon: timedelta,
) -> tuple[pd.Series, Context]:
    """The load on the step grid before ``now`` and the model context (temperature gridded
    over history and horizon)."""
    ts = pd.Timestamp(now)
    if ts.tzinfo is None:
        raise ForecastInputError("now must be timezone-aware")
    ts = ts.tz_convert("UTC")
    load = to_grid(history_kw, step=step, end=ts)
    if load.dropna().empty:
        raise InsufficientHistory("no observed load before now")
    grid_temp = None
    if temperature_c is not None and not temperature_c.empty:
        full = pd.date_range(load.index[0], ts.ceil(pd.Timedelta(step)) + pd.Timedelta(horizon),
                             freq=pd.Timedelta(step), tz="UTC")
        grid_temp = temperature_grid(temperature_c, full)
    return load, Context(timezone=timezone, country=country, step=step, temperature_c=grid_temp)


def choose_model(
    history_kw: pd.Series,
    *,
    temperature_c: pd.Series | None,
    timezone: str,
    country: str | None,
    now: datetime | None = None,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    step: timedelta = STEP_15_MIN,
    horizon: timedelta = HORIZON_24_H,
    evaluation_origins: int = 14,
    calibration_origins: int = 21,
) -> Choice:
    """Backtest the ``candidates`` the history supports and choose one (see module doc).

    ``now`` defaults to the end of the history. With too little history for an evaluation
    the model is chosen by the fallback chain and calibrated on what origins there are, or on
    its in-sample residuals.
    """
    end = pd.Timestamp(now) if now is not None else history_kw.index.max() + pd.Timedelta(step)
    load, ctx = prepare(history_kw, now=end, temperature_c=temperature_c, timezone=timezone,
                        country=country, step=step, horizon=horizon)
    names = supported(candidates, observed_span(load))
    models = [build_model(n) for n in names]
    min_history = max(m.min_history for m in models)
    origins = rolling_origins(load, horizon=horizon, min_history=min_history,
                              count=evaluation_origins + calibration_origins)
    # A young facility has few origins: split them about evenly between calibration and
    # scoring rather than score one origin.
    calibrating = min(calibration_origins,
                      max(1, len(origins) - evaluation_origins, len(origins) // 2))
    result = backtest(load, ctx, models, horizon=horizon, origins=origins,
                      calibration_origins=calibrating)
    chosen = best(result.scores) or names[0]
    calibration = result.calibrations.get(chosen)
    if calibration is None or calibration.residual_count == 0:
        fitted = build_model(chosen).fit(load, ctx)
        calibration = calibrate_in_sample(fitted.in_sample_residuals_kw)
    return Choice(model=chosen, calibration=calibration, scores=tuple(result.scores.values()),
                  made_at=end.to_pydatetime(), step=step)
