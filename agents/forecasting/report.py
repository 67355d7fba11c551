"""The ``sems forecast backtest`` report: the models' backtest scores beside the seasonal-naive
baseline on one series, the model SEMS would choose marked (``streams/forecast_cli.py`` is the
shell that reads the files and prints)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from agents.forecasting.backtest import ModelScore, backtest, best, rolling_origins
from agents.forecasting.errors import ForecastInputError
from agents.forecasting.features import infer_interval
from agents.forecasting.models import SEASONAL_NAIVE
from agents.forecasting.select import build_model, prepare

MIN_INTERVAL = pd.Timedelta(minutes=15)
MAX_INTERVAL = pd.Timedelta(hours=1)


def backtest_report(
    load_kw: pd.Series,
    temperature_c: pd.Series | None,
    *,
    horizon: timedelta,
    timezone: str,
    country: str | None,
    models: list[str],
    origins: int,
    calibration_origins: int,
) -> dict[str, Any]:
    interval = infer_interval(load_kw.sort_index())
    if interval is None or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ForecastInputError(f"interval {interval} is outside 15 min .. 1 h")
    step = timedelta(seconds=interval.total_seconds())
    names = list(dict.fromkeys([*models, SEASONAL_NAIVE]))
    candidates = [build_model(n) for n in names]
    end = load_kw.index.max() + interval
    load, ctx = prepare(load_kw, now=end, temperature_c=temperature_c, timezone=timezone,
                        country=country, step=step, horizon=horizon)
    min_history = max(m.min_history for m in candidates)
    at = rolling_origins(load, horizon=horizon, min_history=min_history,
                         count=origins + calibration_origins)
    if len(at) <= calibration_origins:
        raise ForecastInputError(f"history too short for {calibration_origins} calibration "
                                 f"origins and a scored one ({len(at)} origins fit)")
    result = backtest(load, ctx, candidates, horizon=horizon, origins=at,
                      calibration_origins=calibration_origins)
    chosen = best(result.scores)
    naive = result.scores.get(SEASONAL_NAIVE)
    rows = []
    for name in names:
        score = result.scores.get(name)
        if score is None:
            continue
        row: dict[str, Any] = {**_score_dict(score), "chosen": name == chosen,
                               "baseline": name == SEASONAL_NAIVE}
        if naive is not None and name != SEASONAL_NAIVE:
            row["mape_improvement_vs_naive_pct"] = _improvement(score.mape_pct, naive.mape_pct)
        rows.append(row)
    return {"step_s": int(step.total_seconds()), "horizon_s": int(horizon.total_seconds()),
            "timezone": timezone, "country": country, "weather": temperature_c is not None,
            "origins": len(at) - calibration_origins, "calibration_origins": calibration_origins,
            "first_origin": at[calibration_origins].isoformat(), "last_origin": at[-1].isoformat(),
            "chosen": chosen, "models": rows}


def _improvement(model_pct: float, naive_pct: float) -> float:
    return (1.0 - model_pct / naive_pct) * 100.0 if naive_pct else math.nan


def _score_dict(score: ModelScore) -> dict[str, Any]:
    return {"model": score.model, "mape_pct": score.mape_pct, "cv_rmse_pct": score.cv_rmse_pct,
            "nmbe_pct": score.nmbe_pct, "pinball_kw": score.pinball_kw,
            "coverage_80_pct": score.coverage_80_pct, "coverage_95_pct": score.coverage_95_pct,
            "points": score.points, "weather_used": score.weather_used,
            "fit_predict_ms": score.fit_predict_ms}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{report['origins']} origins ({report['first_origin']} .. {report['last_origin']}),"
             f" horizon {report['horizon_s'] // 3600} h, step {report['step_s'] // 60} min",
             f"{'model':<16}{'MAPE %':>9}{'CV(RMSE) %':>12}{'NMBE %':>9}{'pinball kW':>12}"
             f"{'cov 80 %':>10}{'cov 95 %':>10}{'weather':>9}  chosen"]
    for row in report["models"]:
        lines.append(f"{row['model']:<16}{row['mape_pct']:>9.1f}{row['cv_rmse_pct']:>12.1f}"
                     f"{row['nmbe_pct']:>9.1f}{row['pinball_kw']:>12.4f}"
                     f"{row['coverage_80_pct']:>10.1f}{row['coverage_95_pct']:>10.1f}"
                     f"{'yes' if row['weather_used'] else 'no':>9}"
                     f"  {'*' if row['chosen'] else ''}")
    chosen = next((r for r in report["models"] if r["chosen"]), None)
    if chosen is not None and "mape_improvement_vs_naive_pct" in chosen:
        lines.append(f"chosen {chosen['model']}: MAPE "
                     f"{chosen['mape_improvement_vs_naive_pct']:.1f} % below seasonal naive")
    return "\n".join(lines)
