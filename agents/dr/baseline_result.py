"""What a baseline is: its method, parameters and configuration, and its result (computed by
agents/dr/baselines.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.dr.series import BaselineInputError

BaselineMethod = Literal["caiso_10_in_10", "pjm_high_4_of_5", "forecast", "meter_before"]
AdjustmentKind = Literal["ratio", "additive"]


class UnsupportedEventDayError(BaselineInputError):
    """Weekend or holiday events: both programs define separate CBLs for them."""


class _Params(BaseModel):
    """Validated and closed: a typo in a facility's stored configuration is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TenInTenParams(_Params):
    """CAISO 10-in-10. ``adjustment_cap`` 0.2 limits the ratio to 0.8..1.2; None: uncapped."""

    days: int = Field(default=10, ge=1)
    min_days: int = Field(default=10, ge=1)  # strict; a program that accepts fewer lowers it
    lookback_days: int = Field(default=45, ge=1)
    adjustment_hours: int = Field(default=3, ge=1)
    adjustment_gap_hours: int = Field(default=1, ge=0)  # skipped between window and event
    adjustment_cap: float | None = Field(default=0.20, ge=0, lt=1)
    day_of_adjustment: bool = True

    @model_validator(mode="after")
    def _min_within_days(self) -> TenInTenParams:
        if self.min_days > self.days:
            raise ValueError("min_days must not exceed days")
        return self


class HighFourOfFiveParams(_Params):
    """PJM High 4 of 5 with the symmetric additive adjustment (uncapped by default)."""

    candidate_days: int = Field(default=5, ge=1)
    selected_days: int = Field(default=4, ge=1)
    lookback_days: int = Field(default=45, ge=1)
    low_usage_fraction: float = Field(default=0.25, ge=0, lt=1)
    adjustment_hours: int = Field(default=3, ge=1)
    adjustment_gap_hours: int = Field(default=1, ge=0)
    adjustment_cap_kw: float | None = Field(default=None, ge=0)
    day_of_adjustment: bool = True

    @model_validator(mode="after")
    def _selected_within_candidates(self) -> HighFourOfFiveParams:
        if self.selected_days > self.candidate_days:
            raise ValueError("selected_days must not exceed candidate_days")
        return self


class MeterBeforeParams(_Params):
    """Meter-before: the average over the ``window_minutes`` before the event."""

    window_minutes: int = Field(default=15, ge=1, le=240)
    min_coverage: float = Field(default=0.8, gt=0, le=1)


class BaselineConfig(_Params):
    """The baseline a facility settles with: method, its parameters, its holiday calendar."""

    method: BaselineMethod = "caiso_10_in_10"
    ten_in_ten: TenInTenParams = TenInTenParams()
    high_four_of_five: HighFourOfFiveParams = HighFourOfFiveParams()
    meter_before: MeterBeforeParams = MeterBeforeParams()
    holiday_country: str | None = None  # e.g. "US": weekday public holidays are not baseline days
    holiday_subdiv: str | None = None  # e.g. "CA"


@dataclass(frozen=True, slots=True)
class DayOfAdjustment:
    """The same-day adjustment: what was observed, what the baseline said, what was applied."""

    kind: AdjustmentKind
    window_start: datetime
    window_end: datetime
    observed_kw: float  # event-day average over the window
    baseline_kw: float  # unadjusted baseline average over the same window
    raw: float  # ratio (kind "ratio") or kW (kind "additive") before the cap
    applied: float
    capped: bool


@dataclass(frozen=True, slots=True)
class BaselineResult:
    method: BaselineMethod
    interval_s: int
    interval_starts: tuple[datetime, ...]  # UTC
    baseline_kw: tuple[float, ...]
    unadjusted_kw: tuple[float, ...]
    days_used: tuple[date, ...] = ()  # most recent first
    adjustment: DayOfAdjustment | None = None
    provisional: bool = False
    """Computed before the data it needs was all there (the day-of adjustment window, the
    meter-before window): good for planning, recomputed before commanding and to settle."""

    @property
    def mean_kw(self) -> float:
        return float(np.mean(self.baseline_kw))

    def series(self) -> pd.Series:
        """Baseline kW indexed by UTC interval start."""
        return pd.Series(self.baseline_kw, index=pd.DatetimeIndex(self.interval_starts))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: datetimes and dates as ISO strings."""
        adj = self.adjustment
        return {
            "method": self.method,
            "interval_s": self.interval_s,
            "interval_starts": [ts.isoformat() for ts in self.interval_starts],
            "baseline_kw": list(self.baseline_kw),
            "unadjusted_kw": list(self.unadjusted_kw),
            "days_used": [d.isoformat() for d in self.days_used],
            "provisional": self.provisional,
            "adjustment": None if adj is None else {
                "kind": adj.kind,
                "window_start": adj.window_start.isoformat(),
                "window_end": adj.window_end.isoformat(),
                "observed_kw": adj.observed_kw,
                "baseline_kw": adj.baseline_kw,
                "raw": adj.raw,
                "applied": adj.applied,
                "capped": adj.capped,
            },
        }


def baseline_of(stored: dict[str, Any]) -> BaselineResult:
    """The ``BaselineResult`` an event stored (``to_dict()``), without its adjustment."""
    return BaselineResult(
        method=stored["method"], interval_s=int(stored["interval_s"]),
        interval_starts=tuple(datetime.fromisoformat(t) for t in stored["interval_starts"]),
        baseline_kw=tuple(float(v) for v in stored["baseline_kw"]),
        unadjusted_kw=tuple(float(v) for v in stored["unadjusted_kw"]),
        days_used=tuple(date.fromisoformat(d) for d in stored.get("days_used", ())),
        provisional=bool(stored.get("provisional", False)))
