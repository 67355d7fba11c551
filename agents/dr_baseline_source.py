"""The DR agent's reads: a facility's baseline for an event, its metered load, its forecast.

``method="auto"`` takes, in order, the first baseline the data allows: the load forecast's
(when a stored forecast covers every event interval), CAISO 10-in-10 (ten eligible weekdays of
history), meter-before (the 15 minutes before the event, for short events and young
installations). A fixed method fails with its reason when the data does not allow it. The
chosen method, its days and its adjustment are stored with the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from agents.dr.baseline_result import (
    BaselineConfig,
    BaselineResult,
    HighFourOfFiveParams,
    TenInTenParams,
)
from agents.dr.baselines import compute_baseline, forecast_baseline
from agents.dr.meter_before import meter_before
from agents.dr.series import BaselineError, local_date
from agents.offload import off_loop
from schemas.forecast import LoadForecastPoint
from schemas.metadata import DrBaselineMethod, Facility
from schemas.rollup import Scope, WindowName
from tables.ports.dr import DrStore
from tables.ports.forecasts import ForecastStore
from tables.ports.timeseries import TimeSeriesStore

MethodSetting = DrBaselineMethod
AUTO_ORDER: tuple[MethodSetting, ...] = ("forecast", "caiso_10_in_10", "meter_before")
FORECAST_STEP_S = 900
MAX_ROLLUPS = 200_000
SETTLE = timedelta(minutes=2)
"""How long after an interval ends its rollup is taken as final (allowed lateness, commit)."""


class NoBaseline(Exception):
    """No method could compute a baseline; the message says why, method by method."""


def _grid_s(start: datetime, end: datetime) -> int:
    """15-minute intervals when the event is on the quarter-hour grid, else 1-minute ones."""
    on_quarter = not (start.timestamp() % 900 or end.timestamp() % 900)
    return 900 if on_quarter else 60


@dataclass
class BaselineSource:
    timeseries: TimeSeriesStore
    forecasts: ForecastStore | None
    method: MethodSetting = "auto"
    config: BaselineConfig = field(default_factory=BaselineConfig)
    events: DrStore | None = None
    """The facility's DR events: their days are not baseline days (they were shed)."""

    async def baseline(self, facility: Facility, *, event_start: datetime,
                       event_end: datetime, now: datetime,
                       method: MethodSetting | None = None) -> BaselineResult:
        """The event's baseline with the data there is at ``now``; ``provisional`` when a
        window it needs is not over yet (the day-of adjustment's is then left out). The
        method: ``method``, else the facility's own (``dr_baseline``), else the setting."""
        chosen = method or facility.dr_baseline or self.method
        methods = AUTO_ORDER if chosen == "auto" else (chosen,)
        reasons: list[str] = []
        for m in methods:
            try:
                return await self._one(m, facility, event_start, event_end, now)
            except BaselineError as exc:
                reasons.append(f"{m}: {exc}")
        raise NoBaseline("; ".join(reasons))

    async def _one(self, method: MethodSetting, facility: Facility, start: datetime,
                   end: datetime, now: datetime) -> BaselineResult:
        fid = facility.facility_id
        cfg = self.config
        if method == "forecast":
            points = await self.forecast_points(fid, start, end)
            return forecast_baseline([(p.timestamp, p.predicted_load_kw) for p in points],
                                     event_start=start, event_end=end,
                                     interval_s=FORECAST_STEP_S)
        if method == "meter_before":
            window_end = min(now, start).replace(second=0, microsecond=0)
            load = await self.metered(fid, window_end - timedelta(hours=1), window_end,
                                      interval_s=60)
            result = meter_before(load, event_start=start, event_end=end, interval_s=60,
                                  window_end=window_end, params=cfg.meter_before)
            return replace(result, provisional=now < start + SETTLE)
        step_s = _grid_s(start, end)
        params: TenInTenParams | HighFourOfFiveParams = (
            cfg.ten_in_ten if method == "caiso_10_in_10" else cfg.high_four_of_five)
        window_end = start - timedelta(hours=params.adjustment_gap_hours)
        provisional = params.day_of_adjustment and now < window_end + SETTLE
        if provisional:  # plan now without it; recomputed once the window is metered
            params = params.model_copy(update={"day_of_adjustment": False})
        load = await self.metered(fid, start - timedelta(days=params.lookback_days + 1),
                                  min(now, start), interval_s=step_s)
        if not load:
            raise BaselineError("no metered history")
        # Weeks of history through pandas: ~45 ms a facility, on a thread so that the API's
        # event loop is not held (bench/dr_stall.py, docs/performance.md).
        result = await off_loop(
            compute_baseline,
            cfg.model_copy(update={
                "method": method,
                "ten_in_ten" if method == "caiso_10_in_10" else "high_four_of_five": params,
                "holiday_country": cfg.holiday_country or facility.country}),
            event_start=start, event_end=end, timezone=facility.timezone, load=load,
            excluded_dates=await self._event_days(facility, start), interval_s=step_s)
        return replace(result, provisional=provisional)

    async def _event_days(self, facility: Facility, start: datetime) -> set[date]:
        """Local dates of the facility's other DR events before this one's day, whatever became
        of them: a dispatched day is not a normal day (CAISO and PJM both leave them out)."""
        if self.events is None:
            return set()
        tz = ZoneInfo(facility.timezone)
        day = local_date(start, tz)
        events = await self.events.dr_events(facility_id=facility.facility_id, limit=10_000)
        last = timedelta(microseconds=1)  # event_end is exclusive: midnight is not the next day
        return {d for e in events
                for d in (local_date(e.event_start, tz), local_date(e.event_end - last, tz))
                if d < day}

    async def forecast_points(self, facility_id: str, start: datetime,
                              end: datetime) -> list[LoadForecastPoint]:
        if self.forecasts is None:
            raise BaselineError("no forecast store")
        grid = timedelta(seconds=FORECAST_STEP_S)
        first = datetime.fromtimestamp(start.timestamp() // FORECAST_STEP_S * FORECAST_STEP_S,
                                       tz=start.tzinfo)
        rows = await self.forecasts.forecast_rows(facility_id, start=first, end=end + grid)
        if not rows:
            raise BaselineError("no stored forecast covers the event")
        return [r.point for r in rows]

    async def upper_band(self, facility_id: str, baseline: BaselineResult,
                         band: Literal["80", "95"] = "80") -> list[float]:
        """The forecast's upper band on the baseline's intervals, for the planner's robust
        margin; the baseline itself where no forecast covers an interval."""
        try:
            points = await self.forecast_points(
                facility_id, baseline.interval_starts[0],
                baseline.interval_starts[-1] + timedelta(seconds=baseline.interval_s))
        except BaselineError:
            return list(baseline.baseline_kw)
        step_s = FORECAST_STEP_S
        by_start = {int(p.timestamp.timestamp()) // step_s: p for p in points}
        out = []
        for ts, base in zip(baseline.interval_starts, baseline.baseline_kw, strict=True):
            p = by_start.get(int(ts.timestamp()) // step_s)
            upper = None if p is None else (p.confidence_upper if band == "80" else p.upper_95)
            # the forecast's excess over its own prediction, added to this baseline
            out.append(base if p is None or upper is None
                       else base + max(0.0, upper - p.predicted_load_kw))
        return out

    async def metered(self, facility_id: str, start: datetime, end: datetime, *,
                      interval_s: int) -> list[tuple[datetime, float]]:
        """Facility interval-mean kW (main meters) from the 1-minute or 15-minute rollups."""
        window = WindowName.MIN_1 if interval_s == 60 else WindowName.MIN_15
        rollups = await self.timeseries.rollups(scope=Scope.FACILITY, scope_id=facility_id,
                                                window=window, start=start, end=end,
                                                limit=MAX_ROLLUPS)
        return [(r.window_start, r.avg_power_kw) for r in rollups if r.window_end <= end]

