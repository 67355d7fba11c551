"""Event-time rollups of meter samples into 1-min, 15-min and hourly tumbling windows.

Per facility (its partition key) a watermark trails the newest accepted sample by
``allowed_lateness_ms``. A window's final rollup is emitted once, when the watermark passes its
end. A sample whose 1-min window is already closed is late; anything newer still corrects its
window. 1-min windows integrate samples; 15-min and hourly windows fold the closed 1-min ones,
so every granularity agrees exactly. Facility rollups add up the facility's main meters only.

Pure state: the caller supplies every clock value, so replaying the same input gives the same
output, which is what restart recovery relies on.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.metadata import Registry
from schemas.rollup import Rollup, Scope, WindowName
from tables.windows import (
    COMPOSED_WINDOWS,
    MINUTE_MS,
    WINDOW_MS,
    Accumulator,
    Segment,
    hold_segments,
    total_extremes,
    window_start,
)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class WindowSettings:
    allowed_lateness_ms: int = 30_000
    idle_timeout_ms: int = 60_000
    """After this long without any sample from a facility (wall clock), its watermark moves on
    with the wall clock so that a facility that went quiet still gets its windows closed."""


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def to_ms(ts: datetime) -> int:
    return round(ts.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a restart needs besides the raw samples at or after ``closed_until_ms``."""

    facility_id: str
    closed_until_ms: int | None
    """End of the last closed 1-min window; ``None`` before the first window closed."""
    max_ts_ms: int


@dataclass(slots=True)
class FacilityWindows:
    facility_id: str
    closed_until_ms: int | None = None
    max_ts_ms: int | None = None
    last_arrival_ms: int | None = None
    # minute start -> meter -> ts -> kW
    minutes: dict[int, dict[str, dict[int, float]]] = field(default_factory=dict)
    carry: dict[str, tuple[int, float]] = field(default_factory=dict)
    # window -> start -> meter -> totals, for the composed windows
    meter_accs: dict[WindowName, dict[int, dict[str, Accumulator]]] = field(
        default_factory=lambda: {w: {} for w in COMPOSED_WINDOWS}
    )
    # window -> start -> facility max/min from the closed minutes
    facility_accs: dict[WindowName, dict[int, Accumulator]] = field(
        default_factory=lambda: {w: {} for w in COMPOSED_WINDOWS}
    )


class RollupAggregator:
    """Rollup state of many facilities. Not thread-safe; one owner per partition."""

    def __init__(self, registry: Registry, settings: WindowSettings) -> None:
        self.registry = registry
        self.settings = settings
        self.facilities: dict[str, FacilityWindows] = {}

    # -- input ---------------------------------------------------------------------------

    def state(self, facility_id: str) -> FacilityWindows:
        st = self.facilities.get(facility_id)
        if st is None:
            st = self.facilities[facility_id] = FacilityWindows(facility_id)
        return st

    def add(self, facility_id: str, meter_id: str, ts_ms: int, kw: float,
            *, arrival_ms: int) -> Outcome:
        """Fold one validated sample. Windows close only in :meth:`advance`."""
        st = self.state(facility_id)
        if ts_ms < self._boundary(st):
            return Outcome.LATE
        bucket = st.minutes.setdefault(window_start(ts_ms, MINUTE_MS), {}).setdefault(
            meter_id, {}
        )
        if ts_ms in bucket:
            return Outcome.DUPLICATE
        bucket[ts_ms] = kw
        if st.max_ts_ms is None or ts_ms > st.max_ts_ms:
            st.max_ts_ms = ts_ms
        st.last_arrival_ms = arrival_ms
        return Outcome.ACCEPTED

    def _boundary(self, st: FacilityWindows) -> int:
        """Samples before this are late: their 1-min window is closed, or is due to close as
        soon as :meth:`advance` runs. Judged per sample, so where a batch ends does not change
        what is late."""
        boundary = st.closed_until_ms if st.closed_until_ms is not None else -(2**62)
        if st.max_ts_ms is not None:
            due = window_start(st.max_ts_ms - self.settings.allowed_lateness_ms, MINUTE_MS)
            boundary = max(boundary, due)
        return boundary

    def advance(self, facility_id: str) -> list[Rollup]:
        """Close the windows that the facility's watermark has passed."""
        st = self.state(facility_id)
        if st.max_ts_ms is None:
            return []
        return self._close_until(st, st.max_ts_ms - self.settings.allowed_lateness_ms)

    def advance_idle(self, now_ms: int) -> list[Rollup]:
        """Move the watermark of facilities that sent nothing for ``idle_timeout_ms``.

        Event time is assumed to progress like the wall clock since the last arrival, so a
        replay of old data and live data behave alike.
        """
        out: list[Rollup] = []
        for st in self.facilities.values():
            if st.max_ts_ms is None or st.last_arrival_ms is None:
                continue
            idle_ms = now_ms - st.last_arrival_ms
            if idle_ms >= self.settings.idle_timeout_ms:
                watermark = st.max_ts_ms + idle_ms - self.settings.allowed_lateness_ms
                out.extend(self._close_until(st, watermark))
        return out

    def checkpoints(self, facility_ids: Iterable[str]) -> list[Checkpoint]:
        out = []
        for fid in facility_ids:
            st = self.facilities.get(fid)
            if st and st.max_ts_ms is not None:
                out.append(Checkpoint(fid, st.closed_until_ms, st.max_ts_ms))
        return out

    # -- recovery ------------------------------------------------------------------------

    def restore(
        self,
        checkpoint: Checkpoint,
        *,
        carries: Mapping[str, tuple[int, float]],
        minute_rollups: Iterable[Rollup],
        now_ms: int,
    ) -> None:
        """Rebuild a facility's state as it was after its last committed batch.

        ``carries`` are each meter's last sample before ``closed_until_ms``; ``minute_rollups``
        the 1-min rollups emitted inside the 15-min and hourly windows still open. The caller
        then replays the raw samples at or after ``closed_until_ms`` through :meth:`add`.
        """
        st = self.facilities[checkpoint.facility_id] = FacilityWindows(
            checkpoint.facility_id,
            closed_until_ms=checkpoint.closed_until_ms,
            max_ts_ms=checkpoint.max_ts_ms,
            last_arrival_ms=now_ms,
        )
        closed_until = checkpoint.closed_until_ms
        if closed_until is None:
            return
        for meter_id, carry in carries.items():
            st.carry[meter_id] = carry
            self._open_spill(st, meter_id, carry, closed_until)
        for r in minute_rollups:
            start = to_ms(r.window_start)
            part = Accumulator(
                energy_kwh=r.total_energy_kwh,
                covered_ms=round(r.covered_s * 1000),
                sample_count=r.sample_count,
                max_kw=r.max_power_kw,
                min_kw=r.min_power_kw,
            )
            for w in COMPOSED_WINDOWS:
                ws = window_start(start, WINDOW_MS[w])
                if ws + WINDOW_MS[w] <= closed_until:
                    continue
                if r.scope is Scope.METER and r.meter_id is not None:
                    st.meter_accs[w].setdefault(ws, {}).setdefault(
                        r.meter_id, Accumulator()
                    ).merge(part)
                else:
                    st.facility_accs[w].setdefault(ws, Accumulator()).add_extremes(
                        r.max_power_kw, r.min_power_kw
                    )

    # -- closing -------------------------------------------------------------------------

    def _close_until(self, st: FacilityWindows, watermark_ms: int) -> list[Rollup]:
        boundary = window_start(watermark_ms, MINUTE_MS)
        if st.closed_until_ms is not None and boundary <= st.closed_until_ms:
            return []
        out: list[Rollup] = []
        while st.minutes:
            start = min(st.minutes)
            if start + MINUTE_MS > boundary:
                break
            self._close_minute(st, start, out)
        for w in COMPOSED_WINDOWS:
            size = WINDOW_MS[w]
            due = sorted(
                s for s in st.meter_accs[w].keys() | st.facility_accs[w].keys()
                if s + size <= boundary
            )
            for start in due:
                self._close_composed(st, w, start, out)
        st.closed_until_ms = boundary
        out.sort(key=lambda r: (r.window_end, WINDOW_MS[r.window]))
        return out

    def _open_spill(self, st: FacilityWindows, meter_id: str, carry: tuple[int, float],
                    minute_end: int) -> None:
        """A sample whose hold runs past ``minute_end`` must be counted in the next minute
        even if that minute gets no sample of its own."""
        meter = self.registry.meters.get(meter_id)
        if meter is None:
            return
        if carry[0] + round(meter.sample_interval_s * 1000) > minute_end:
            st.minutes.setdefault(minute_end, {}).setdefault(meter_id, {})

    def _close_minute(self, st: FacilityWindows, start: int, out: list[Rollup]) -> None:
        end = start + MINUTE_MS
        by_meter = st.minutes.pop(start)
        main_ids = set(self.registry.main_meters.get(st.facility_id, ()))
        main_segments: dict[str, list[Segment]] = {}
        main_totals: dict[str, Accumulator] = {}
        for meter_id in sorted(by_meter):
            meter = self.registry.meters.get(meter_id)
            if meter is None:
                continue
            samples = sorted(by_meter[meter_id].items())
            segments = hold_segments(
                samples,
                carry=st.carry.get(meter_id),
                start_ms=start,
                end_ms=end,
                interval_ms=round(meter.sample_interval_s * 1000),
            )
            if samples:
                st.carry[meter_id] = samples[-1]
            carry = st.carry.get(meter_id)
            if carry is not None:
                self._open_spill(st, meter_id, carry, end)
            if not segments:
                continue
            acc = Accumulator()
            acc.add_segments(segments, len(samples))
            out.append(self._rollup(st.facility_id, meter_id, WindowName.MIN_1, start, acc))
            for w in COMPOSED_WINDOWS:
                ws = window_start(start, WINDOW_MS[w])
                st.meter_accs[w].setdefault(ws, {}).setdefault(meter_id, Accumulator()).merge(acc)
            if meter_id in main_ids:
                main_segments[meter_id] = segments
                main_totals[meter_id] = acc
        if not main_totals:
            return
        extremes = total_extremes([main_segments.get(m, []) for m in sorted(main_ids)])
        max_kw = extremes.max_kw if extremes else None
        min_kw = extremes.min_kw if extremes else None
        out.append(self._facility_rollup(st.facility_id, WindowName.MIN_1, start,
                                         main_totals, len(main_ids), max_kw, min_kw))
        for w in COMPOSED_WINDOWS:
            ws = window_start(start, WINDOW_MS[w])
            st.facility_accs[w].setdefault(ws, Accumulator()).add_extremes(max_kw, min_kw)

    def _close_composed(self, st: FacilityWindows, w: WindowName, start: int,
                        out: list[Rollup]) -> None:
        per_meter = st.meter_accs[w].pop(start, {})
        facility = st.facility_accs[w].pop(start, Accumulator())
        main_ids = self.registry.main_meters.get(st.facility_id, ())
        for meter_id in sorted(per_meter):
            out.append(self._rollup(st.facility_id, meter_id, w, start, per_meter[meter_id]))
        mains = {m: per_meter[m] for m in main_ids if m in per_meter}
        if mains:
            out.append(self._facility_rollup(st.facility_id, w, start, mains, len(main_ids),
                                             facility.max_kw, facility.min_kw))

    @staticmethod
    def _rollup(facility_id: str, meter_id: str, w: WindowName, start: int,
                acc: Accumulator) -> Rollup:
        size = WINDOW_MS[w]
        return Rollup(
            scope=Scope.METER,
            facility_id=facility_id,
            meter_id=meter_id,
            window=w,
            window_start=to_datetime(start),
            window_end=to_datetime(start + size),
            avg_power_kw=acc.avg_kw or 0.0,
            max_power_kw=acc.max_kw,
            min_power_kw=acc.min_kw,
            total_energy_kwh=acc.energy_kwh,
            sample_count=acc.sample_count,
            covered_s=acc.covered_ms / 1000,
            coverage=acc.covered_ms / size,
        )

    @staticmethod
    def _facility_rollup(facility_id: str, w: WindowName, start: int,
                         mains: Mapping[str, Accumulator], main_count: int,
                         max_kw: float | None, min_kw: float | None) -> Rollup:
        """Sum of the main meters: energy adds up; mean power adds each meter's mean over its
        own covered time; coverage is the mean of the main meters' coverage (0 for a meter
        with no data)."""
        size = WINDOW_MS[w]
        covered_ms = sum(a.covered_ms for a in mains.values()) / main_count
        return Rollup(
            scope=Scope.FACILITY,
            facility_id=facility_id,
            meter_id=None,
            window=w,
            window_start=to_datetime(start),
            window_end=to_datetime(start + size),
            avg_power_kw=sum(a.avg_kw or 0.0 for a in mains.values()),
            max_power_kw=max_kw,
            min_power_kw=min_kw,
            total_energy_kwh=sum(a.energy_kwh for a in mains.values()),
            sample_count=sum(a.sample_count for a in mains.values()),
            covered_s=covered_ms / 1000,
            coverage=covered_ms / size,
        )
