"""Rolling-origin evaluation: refit at each origin on the history before it, forecast the
horizon, compare with what was metered.

Origins are 23 hours apart, so they walk through every hour of the day (the agent forecasts
every 15 minutes, not once a day at midnight). The first ``calibration_origins`` only collect
residuals; each later origin is scored with intervals calibrated on the residuals of the
``calibration_origins`` origins before it, so the reported coverage is out of sample too.
Temperature at the targets is the observed temperature (perfect weather forecast): the scores
of weather models are a little optimistic, the same way for every origin.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from agents.forecasting.features import Context, FloatArray, horizon_index
from agents.forecasting.intervals import Calibration, bands, calibrate
from agents.forecasting.metrics import (
    coverage_pct,
    cv_rmse_pct,
    mape_pct,
    mean_pinball_kw,
    nmbe_pct,
)
from agents.forecasting.models import Model

ORIGIN_SPACING = timedelta(hours=23)


@dataclass(frozen=True, slots=True)
class ModelScore:
    model: str
    mape_pct: float
    cv_rmse_pct: float
    nmbe_pct: float
    pinball_kw: float
    coverage_80_pct: float
    coverage_95_pct: float
    points: int
    origins: int
    weather_used: bool
    fit_predict_ms: float  # median per origin


@dataclass(frozen=True, slots=True)
class _Runs:
    """Per model, the forecasts of every origin: origin number, lead, actual, predicted."""

    origin: list[FloatArray] = field(default_factory=list)
    lead_s: list[FloatArray] = field(default_factory=list)
    actual: list[FloatArray] = field(default_factory=list)
    predicted: list[FloatArray] = field(default_factory=list)
    timings_ms: list[float] = field(default_factory=list)
    weather: list[bool] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BacktestResult:
    scores: dict[str, ModelScore]
    calibrations: dict[str, Calibration]  # from the latest origins: what the agent would use
    origins: tuple[pd.Timestamp, ...]


def rolling_origins(
    load_kw: pd.Series, *, horizon: timedelta, min_history: timedelta, count: int
) -> list[pd.Timestamp]:
    """Up to ``count`` origins, the latest one ``horizon`` before the end of the data, each
    with at least ``min_history`` of data before it. Oldest first."""
    observed = load_kw.dropna()
    if observed.empty:
        return []
    step = pd.Timedelta(load_kw.index[1] - load_kw.index[0]) if len(load_kw) > 1 else None
    if step is None:
        return []
    end = observed.index[-1] + step
    first_allowed = observed.index[0] + pd.Timedelta(min_history)
    latest = (end - pd.Timedelta(horizon)).floor(step)
    out: list[pd.Timestamp] = []
    origin = latest
    while len(out) < count and origin >= first_allowed:
        out.append(origin)
        origin = (origin - pd.Timedelta(ORIGIN_SPACING)).floor(step)
    return out[::-1]


def backtest(
    load_kw: pd.Series,
    ctx: Context,
    models: list[Model],
    *,
    horizon: timedelta,
    origins: list[pd.Timestamp],
    calibration_origins: int,
) -> BacktestResult:
    """Score ``models`` on ``load_kw`` (the step grid, NaN gaps) at ``origins``."""
    runs: dict[str, _Runs] = {m.name: _Runs() for m in models}
    values = load_kw.to_numpy(dtype="float64")
    for k, origin in enumerate(origins):
        train = load_kw[load_kw.index < origin]
        targets = horizon_index(origin, horizon=horizon, step=ctx.step)
        pos = load_kw.index.get_indexer(targets)
        known = pos >= 0
        actual = np.full(len(targets), np.nan)
        actual[known] = values[pos[known]]
        seen = ~np.isnan(actual)
        if not seen.any() or train.dropna().empty:
            continue
        lead_s = ((targets - origin) / pd.Timedelta(seconds=1)).to_numpy(dtype="float64")
        for model in models:
            started = time.perf_counter()
            fitted = model.fit(train, ctx)
            predicted = fitted.predict(targets)
            run = runs[model.name]
            run.timings_ms.append((time.perf_counter() - started) * 1000.0)
            run.weather.append(fitted.weather_used)
            run.origin.append(np.full(int(seen.sum()), float(k)))
            run.lead_s.append(lead_s[seen])
            run.actual.append(actual[seen])
            run.predicted.append(predicted[seen])
    scores: dict[str, ModelScore] = {}
    calibrations: dict[str, Calibration] = {}
    for name, run in runs.items():
        if not run.actual:
            continue
        score, calibration = _score(name, run, calibration_origins)
        if score is not None:
            scores[name] = score
        calibrations[name] = calibration
    return BacktestResult(scores, calibrations, tuple(origins))


def _score(
    name: str, run: _Runs, calibration_origins: int
) -> tuple[ModelScore | None, Calibration]:
    origin = np.concatenate(run.origin)
    lead = np.concatenate(run.lead_s)
    actual = np.concatenate(run.actual)
    predicted = np.concatenate(run.predicted)
    residual = actual - predicted
    latest = origin >= origin.max() - calibration_origins + 1
    final = calibrate(lead[latest], residual[latest])
    evaluated = np.unique(origin[origin >= origin.min() + calibration_origins])
    if len(evaluated) == 0:
        return None, final
    parts: dict[str, list[FloatArray]] = {k: [] for k in ("a", "p", "l95", "l80", "u80", "u95")}
    for k in evaluated:
        window = (origin < k) & (origin >= k - calibration_origins)
        cal = calibrate(lead[window], residual[window])
        here = origin == k
        b = bands(cal, predicted[here], lead[here])
        for key, arr in (("a", actual[here]), ("p", predicted[here]), ("l95", b.lower_95_kw),
                         ("l80", b.lower_80_kw), ("u80", b.upper_80_kw),
                         ("u95", b.upper_95_kw)):
            parts[key].append(arr)
    a, p, l95, l80, u80, u95 = (np.concatenate(parts[k])
                                for k in ("a", "p", "l95", "l80", "u80", "u95"))
    score = ModelScore(
        model=name, mape_pct=mape_pct(a, p), cv_rmse_pct=cv_rmse_pct(a, p),
        nmbe_pct=nmbe_pct(a, p),
        pinball_kw=mean_pinball_kw(a, {0.025: l95, 0.1: l80, 0.5: p, 0.9: u80, 0.975: u95}),
        coverage_80_pct=coverage_pct(a, l80, u80), coverage_95_pct=coverage_pct(a, l95, u95),
        points=len(a), origins=len(evaluated), weather_used=all(run.weather),
        fit_predict_ms=float(np.median(run.timings_ms)))
    return score, final


def best(scores: dict[str, ModelScore]) -> str | None:
    """The model with the lowest CV(RMSE) (Guideline 14's accuracy measure; MAPE would
    reward forecasting low), ties to the earlier name."""
    ranked = [s for s in scores.values() if math.isfinite(s.cv_rmse_pct)]
    if not ranked:
        return None
    return min(ranked, key=lambda s: (s.cv_rmse_pct, s.model)).model
