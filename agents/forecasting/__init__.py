"""Load forecasting (issue 6): pure logic, no I/O.

Every 15 minutes the forecast agent asks, per facility, for the next 24 h at 15-min resolution
with 80 % and 95 % intervals. Two entry points:

``choose_model(history_kw, *, temperature_c, timezone, country, now=None,
candidates=DEFAULT_CANDIDATES, step=15 min, horizon=24 h) -> Choice``
    Rolling-origin backtest of the candidate models the history supports; returns the model
    with the lowest CV(RMSE) and the interval calibration from its out-of-sample residuals.
    Seconds per facility: run it rarely (daily) and cache the ``Choice``.

``forecast(history_kw, *, now, timezone, temperature_c=None, country=None, model=None,
choice=None, horizon=24 h, step=15 min) -> Forecast``
    Refits the chosen model (milliseconds for ``fourier_ols``) and returns ``Forecast``:
    ``made_at``, ``model``, ``weather_used``, ``step`` and per point (``points``) the
    ``timestamp`` (UTC start of the interval; the first starts at or after ``now``),
    ``predicted_load_kw``, ``lower_80_kw``, ``upper_80_kw``, ``lower_95_kw``, ``upper_95_kw``.

Inputs: ``history_kw`` is a pandas Series of mean kW on a timezone-aware (UTC) DatetimeIndex
at any regular interval, gaps allowed; ``temperature_c`` likewise (hourly or finer, covering
the history and the horizon; without it, or if it does not cover the horizon, the models run
without weather and ``weather_used`` is False); ``timezone`` is the facility's IANA zone (the
calendar follows its wall clock across DST); ``country`` an ISO code for public holidays
(``holidays`` package) or None. Bad input raises ``ForecastInputError``; no observed load
before ``now`` raises ``InsufficientHistory``.

Models (``build_model``): ``fourier_ols``, ``mstl_ets``, ``prophet`` (backtest on request),
``seasonal_naive`` (the baseline), and the short-history fallbacks ``daily_profile`` and
``persistence``. ``record.to_record(forecast, facility_id=...)`` gives the ``LoadForecast``
record (schemas/forecast.py) to publish. See docs/forecasting.md.
"""

from agents.forecasting.backtest import BacktestResult, ModelScore, backtest, rolling_origins
from agents.forecasting.cycle import Forecast, ForecastPoint, forecast
from agents.forecasting.errors import ForecastInputError, InsufficientHistory
from agents.forecasting.intervals import Calibration
from agents.forecasting.select import (
    ALL_MODELS,
    DEFAULT_CANDIDATES,
    Choice,
    build_model,
    choose_model,
    prepare,
)

__all__ = [
    "ALL_MODELS",
    "DEFAULT_CANDIDATES",
    "BacktestResult",
    "Calibration",
    "Choice",
    "Forecast",
    "ForecastInputError",
    "ForecastPoint",
    "InsufficientHistory",
    "ModelScore",
    "backtest",
    "build_model",
    "choose_model",
    "forecast",
    "prepare",
    "rolling_origins",
]
