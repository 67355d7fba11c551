"""``sems forecast backtest``: score the models on a meter's CSV, beside the seasonal-naive
baseline (the shell: reads the files, prints
``agents.forecasting.report``).

    sems forecast backtest --input load.csv [--temperature temp.csv] [--horizon 24h]
        [--timezone America/Chicago] [--country US] [--models fourier_ols,mstl_ets] [--json]

The load CSV has a timestamp column (ISO 8601 with a UTC offset) and a kW column (``kw``, or
the only other column, e.g. eemeter's ``value``) at any regular interval from 15 min to 1 h,
interval-start labels. The temperature CSV has a timestamp and ``temperature_c`` (or
``tempF``/``temperature_f``, converted).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

# pandas, statsmodels and prophet load only when the command runs, not with every ``sems``.
MODELS = ("fourier_ols", "mstl_ets", "prophet", "seasonal_naive", "daily_profile", "persistence")
DEFAULT_MODELS = "fourier_ols,mstl_ets"
_DURATION = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$")
_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"


def duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 90m, 24h, 2d")
    value, unit = int(match.group(1)), match.group(2)
    return {"m": timedelta(minutes=value), "min": timedelta(minutes=value),
            "h": timedelta(hours=value), "d": timedelta(days=value)}[unit]


def add_parser(subparsers: Any) -> None:
    """Register ``forecast backtest`` on the ``sems`` command's subparsers."""
    fc = subparsers.add_parser("forecast", help="load forecasting tools")
    fc_sub = fc.add_subparsers(dest="action", required=True)
    bt = fc_sub.add_parser("backtest", help="rolling-origin backtest of the forecast models on "
                                            "a CSV of timestamp,kw beside seasonal naive")
    bt.add_argument("--input", type=Path, required=True, help="CSV: timestamp,kw (.gz ok)")
    bt.add_argument("--temperature", type=Path, help="CSV: timestamp,temperature_c (or tempF)")
    bt.add_argument("--horizon", type=duration, default=timedelta(hours=24))
    bt.add_argument("--timezone", default="UTC", help="the facility's IANA zone (calendar, DST)")
    bt.add_argument("--country", help="ISO country code for public holidays, e.g. US, DE")
    bt.add_argument("--models", default=DEFAULT_MODELS,
                    help=f"comma-separated candidates of {', '.join(MODELS)}; "
                         "seasonal_naive always runs as the baseline")
    bt.add_argument("--origins", type=int, default=56, help="scored origins (23 h apart)")
    bt.add_argument("--calibration-origins", type=int, default=28,
                    help="origins before each scored one whose residuals calibrate its bands")
    bt.add_argument("--json", action="store_true", help="one JSON document on stdout")


def _read_series(path: Path, names: tuple[str, ...], what: str) -> tuple[pd.Series, str]:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    frame = pd.read_csv(path)
    if frame.shape[1] < 2:
        raise ValueError(f"{path}: needs a timestamp column and a {what} column")
    ts_col = "timestamp" if "timestamp" in frame.columns else str(frame.columns[0])
    others = [str(c) for c in frame.columns if c != ts_col]
    col = next((c for c in names if c in others), others[0] if len(others) == 1 else None)
    if col is None:
        raise ValueError(f"{path}: which column is {what}? expected one of {names}")
    raw = frame[ts_col].astype(str)
    if not raw.str.strip().str.contains(_OFFSET).all():
        raise ValueError(f"{path}: every timestamp needs a UTC offset (e.g. ...Z)")
    index = pd.DatetimeIndex(pd.to_datetime(raw, utc=True, format="ISO8601"))
    return pd.Series(frame[col].to_numpy(dtype="float64"), index=index), col


def read_load(path: Path) -> pd.Series:
    series, _ = _read_series(path, ("kw", "load_kw", "value"), "kW")
    return series


def read_temperature(path: Path) -> pd.Series:
    series, col = _read_series(path, ("temperature_c", "temp_c", "tempC", "temperature_f",
                                      "tempF"), "temperature")
    if col.lower().endswith("f"):
        series = (series - 32.0) / 1.8
    return series


def run(args: argparse.Namespace) -> int:
    import orjson

    from agents.forecasting.report import backtest_report, format_table

    try:
        report = backtest_report(
            read_load(args.input),
            read_temperature(args.temperature) if args.temperature else None,
            horizon=args.horizon, timezone=args.timezone, country=args.country,
            models=[m.strip() for m in args.models.split(",") if m.strip()],
            origins=args.origins, calibration_origins=args.calibration_origins)
    except (OSError, ValueError) as exc:
        print(f"sems forecast backtest: {exc}", file=sys.stderr)
        return 2
    report["input"] = str(args.input)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_table(report))
    return 0
