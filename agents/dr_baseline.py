"""The DR agent's reads: a facility's baseline for an event, its metered load, its forecast.

``method="auto"`` takes, in order, the first baseline the data allows: the load forecast's
(when a stored forecast covers every event interval), CAISO 10-in-10 (ten eligible weekdays of
history), meter-before (the 15 minutes before the event, for short events and young
installations). A fixed method fails with its reason when the data does not allow it. The
chosen method, its days and its adjustment are stored with the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from agents.dr.baseline_types import BaselineConfig, BaselineResult
from agents.dr.baselines import caiso_10_in_10, forecast_baseline, pjm_high_4_of_5
from agents.dr.meter_before import meter_before
from agents.dr.series import BaselineError
from schemas.forecast import LoadForecastPoint
from schemas.metadata import Facility
from schemas.rollup import Scope, WindowName
from tables.ports import ForecastStore, TimeSeriesStore

MethodSetting = Literal["auto", "forecast", "caiso_10_in_10", "pjm_high_4_of_5", "meter_before"]
AUTO_ORDER: tuple[MethodSetting, ...] = ("forecast", "caiso_10_in_10", "meter_before")
LOOKBACK = timedelta(days=46)
FORECAST_STEP_S = 900
MAX_ROLLUPS = 200_000


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

    async def baseline(self, facility: Facility, *, event_start: datetime,
                       event_end: datetime, now: datetime) -> BaselineResult:
        methods = AUTO_ORDER if self.method == "auto" else (self.method,)
        reasons: list[str] = []
        for method in methods:
            try:
                return await self._one(method, facility, event_start, event_end, now)
            except BaselineError as exc:
                reasons.append(f"{method}: {exc}")
        raise NoBaseline("; ".join(reasons))

    async def _one(self, method: MethodSetting, facility: Facility, start: datetime,
                   end: datetime, now: datetime) -> BaselineResult:
        fid = facility.facility_id
        if method == "forecast":
            points = await self.forecast_points(fid, start, end)
            return forecast_baseline([(p.timestamp, p.predicted_load_kw) for p in points],
                                     event_start=start, event_end=end,
                                     interval_s=FORECAST_STEP_S)
        if method == "meter_before":
            window_end = min(now, start).replace(second=0, microsecond=0)
            load = await self.metered(fid, window_end - timedelta(hours=1), window_end,
                                      interval_s=60)
            return meter_before(load, event_start=start, event_end=end, interval_s=60,
                                window_end=window_end, params=self.config.meter_before)
        step_s = _grid_s(start, end)
        load = await self.metered(fid, start - LOOKBACK, min(now, start), interval_s=step_s)
        if not load:
            raise BaselineError("no metered history")
        common = {"event_start": start, "event_end": end, "timezone": facility.timezone,
                  "holiday_country": self.config.holiday_country or facility.country,
                  "holiday_subdiv": self.config.holiday_subdiv, "interval_s": step_s}
        if method == "caiso_10_in_10":
            return caiso_10_in_10(load, params=self.config.ten_in_ten, **common)  # type: ignore[arg-type]
        return pjm_high_4_of_5(load, params=self.config.high_four_of_five, **common)  # type: ignore[arg-type]

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

