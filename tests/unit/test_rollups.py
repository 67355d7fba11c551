"""Event-time rollups: watermark, emission once, lateness, duplicates, facility totals."""

from datetime import UTC, datetime

import pytest

from schemas.metadata import Facility, Meter, MeterType, Registry
from schemas.rollup import Rollup, Scope, WindowName
from tables.rollups import Outcome, RollupAggregator, WindowSettings

pytestmark = pytest.mark.unit

S = 1000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, on every window boundary


def registry(*meters: tuple[str, MeterType]) -> Registry:
    return Registry.build(
        [Facility(facility_id="f1", name="Site", contract_demand_kw=100)],
        [Meter(meter_id=m, facility_id="f1", meter_type=t) for m, t in meters],
    )


def agg(reg: Registry, lateness_s: int = 30, idle_s: int = 60) -> RollupAggregator:
    return RollupAggregator(reg, WindowSettings(allowed_lateness_ms=lateness_s * S,
                                                idle_timeout_ms=idle_s * S))


def feed(a: RollupAggregator, meter: str, start_s: int, end_s: int, kw: float,
         step_s: int = 15) -> list[Rollup]:
    out: list[Rollup] = []
    for t in range(start_s, end_s, step_s):
        assert a.add("f1", meter, T0 + t * S, kw, arrival_ms=T0 + t * S) is Outcome.ACCEPTED
        out.extend(a.advance("f1"))
    return out


def pick(rollups: list[Rollup], scope: Scope, window: WindowName) -> list[Rollup]:
    return [r for r in rollups if r.scope is scope and r.window is window]


MAIN = registry(("m1", MeterType.MAIN))


def test_minute_closes_once_when_watermark_passes_its_end() -> None:
    a = agg(MAIN)
    # Samples 0..75 s: newest 75 s, watermark 75 - 30 = 45 s < 60 s: minute 0 still open.
    assert feed(a, "m1", 0, 90, 10.0) == []
    # Sample at 90 s: watermark 60 s reaches the end of minute 0: it closes, meter + facility.
    out = feed(a, "m1", 90, 105, 10.0)
    assert [(r.scope, r.window, r.window_start) for r in out] == [
        (Scope.METER, WindowName.MIN_1, datetime(2026, 1, 1, tzinfo=UTC)),
        (Scope.FACILITY, WindowName.MIN_1, datetime(2026, 1, 1, tzinfo=UTC)),
    ]
    meter = out[0]
    # 10 kW for 60 s = 10/60 kWh, four samples, fully covered.
    assert meter.total_energy_kwh == pytest.approx(10 / 60)
    assert (meter.sample_count, meter.coverage, meter.avg_power_kw) == (4, 1.0, 10.0)
    # Nothing more until minute 1 is passed; minute 0 is never emitted again.
    assert feed(a, "m1", 105, 150, 10.0) == []


def test_late_sample_within_lateness_corrects_its_window_and_later_one_is_dead() -> None:
    a = agg(MAIN)
    feed(a, "m1", 0, 60, 10.0)  # minute 0 complete at 10 kW
    feed(a, "m1", 75, 90, 10.0)  # 60 s missing so far; watermark 75-30 = 45 s
    # The 60 s sample arrives out of order but minute 1 is open: accepted.
    assert a.add("f1", "m1", T0 + 60 * S, 40.0, arrival_ms=0) is Outcome.ACCEPTED
    out = feed(a, "m1", 90, 165, 10.0)  # the 150 s sample moves the watermark to 120 s
    minute1 = [r for r in pick(out, Scope.METER, WindowName.MIN_1)
               if r.window_start == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)]
    # 40 kW x 15 s + 10 kW x 45 s = 1050 kW.s over 60 s = 17.5 kW.
    assert minute1[0].avg_power_kw == pytest.approx(17.5)
    assert minute1[0].max_power_kw == 40.0
    # Minute 0 is final: a new sample for it is late.
    assert a.add("f1", "m1", T0 + 7 * S, 99.0, arrival_ms=0) is Outcome.LATE


def test_duplicate_counts_once() -> None:
    a = agg(MAIN)
    assert a.add("f1", "m1", T0, 10.0, arrival_ms=0) is Outcome.ACCEPTED
    assert a.add("f1", "m1", T0, 10.0, arrival_ms=0) is Outcome.DUPLICATE
    assert a.add("f1", "m1", T0, 55.0, arrival_ms=0) is Outcome.DUPLICATE  # first one wins
    out = feed(a, "m1", 15, 105, 10.0)
    assert pick(out, Scope.METER, WindowName.MIN_1)[0].sample_count == 4


def test_facility_total_uses_main_meters_only() -> None:
    reg = registry(("m1", MeterType.MAIN), ("m2", MeterType.MAIN), ("h1", MeterType.HVAC))
    a = agg(reg)
    for t in range(0, 105, 15):
        for meter, kw in (("m1", 10.0), ("m2", 5.0), ("h1", 6.0)):
            a.add("f1", meter, T0 + t * S, kw, arrival_ms=0)
    out = a.advance("f1")
    fac = pick(out, Scope.FACILITY, WindowName.MIN_1)[0]
    # Two mains: 10 + 5 = 15 kW; the 6 kW HVAC submeter is inside m1 and must not be added.
    assert fac.avg_power_kw == pytest.approx(15.0)
    assert (fac.max_power_kw, fac.min_power_kw) == (15.0, 15.0)
    assert fac.total_energy_kwh == pytest.approx(15 / 60)
    assert fac.sample_count == 8
    assert fac.coverage == 1.0
    assert {r.meter_id for r in pick(out, Scope.METER, WindowName.MIN_1)} == {"m1", "m2", "h1"}


def test_gap_is_missing_energy_not_zero_power() -> None:
    a = agg(MAIN)
    # Samples at 0 s and 45 s only, 20 kW each; then the next minute pushes the watermark.
    for t in (0, 45):
        a.add("f1", "m1", T0 + t * S, 20.0, arrival_ms=0)
    out = feed(a, "m1", 60, 105, 20.0)
    m = pick(out, Scope.METER, WindowName.MIN_1)[0]
    # 20 kW over 30 s covered: 20 x 30 / 3600 kWh; coverage 0.5; mean power still 20 kW.
    assert m.total_energy_kwh == pytest.approx(20 * 30 / 3600)
    assert (m.coverage, m.avg_power_kw, m.sample_count) == (0.5, 20.0, 2)
    fac = pick(out, Scope.FACILITY, WindowName.MIN_1)[0]
    assert fac.coverage == 0.5


def test_quarter_hour_and_hour_fold_the_minutes() -> None:
    a = agg(MAIN)
    # 12 kW for 61 minutes + 45 s (watermark passes 01:00:00 at the 01:01:30 sample).
    out = feed(a, "m1", 0, 3690, 12.0)
    q = pick(out, Scope.METER, WindowName.MIN_15)
    h = pick(out, Scope.FACILITY, WindowName.HOUR_1)
    assert [r.window_start.minute for r in q] == [0, 15, 30, 45]
    # 12 kW x 0.25 h = 3 kWh per quarter hour from 60 samples; 12 kWh in the hour from 240.
    assert [r.sample_count for r in q] == [60] * 4
    assert [r.total_energy_kwh for r in q] == pytest.approx([3.0] * 4)
    assert len(h) == 1
    assert h[0].total_energy_kwh == pytest.approx(12.0)
    assert (h[0].sample_count, h[0].coverage, h[0].max_power_kw) == (240, 1.0, 12.0)


def test_hour_with_a_missing_quarter_reports_partial_coverage() -> None:
    a = agg(MAIN)
    feed(a, "m1", 0, 900, 8.0)  # first quarter hour only
    out = feed(a, "m1", 1800, 3690, 8.0)  # nothing in 00:15-00:30
    h = pick(out, Scope.METER, WindowName.HOUR_1)[0]
    # 45 of 60 minutes covered at 8 kW: 6 kWh, coverage 0.75, mean 8 kW over the covered time.
    assert h.total_energy_kwh == pytest.approx(6.0)
    assert h.coverage == pytest.approx(0.75)
    assert h.avg_power_kw == pytest.approx(8.0)


def test_sample_hold_spills_into_next_minute_without_samples() -> None:
    reg = Registry.build(
        [Facility(facility_id="f1", name="Site", contract_demand_kw=100)],
        [Meter(meter_id="m5", facility_id="f1", meter_type=MeterType.MAIN,
               sample_interval_s=300)],
    )
    a = agg(reg)
    # A 5-minute meter: the 00:00 sample at 6 kW holds for 5 minutes; the next sample is 00:05.
    a.add("f1", "m5", T0, 6.0, arrival_ms=0)
    a.add("f1", "m5", T0 + 300 * S, 6.0, arrival_ms=0)
    a.add("f1", "m5", T0 + 600 * S, 6.0, arrival_ms=0)
    out = a.advance("f1")  # watermark 10:00 - 0:30 = 09:30 -> minutes up to 09:00 close
    minutes = pick(out, Scope.METER, WindowName.MIN_1)
    assert len(minutes) == 9
    assert all(m.coverage == 1.0 and m.avg_power_kw == 6.0 for m in minutes)
    # Only the minutes in which a sample was taken count it.
    assert [m.sample_count for m in minutes] == [1, 0, 0, 0, 0, 1, 0, 0, 0]


def test_quiet_facility_is_closed_by_the_idle_timer() -> None:
    a = agg(MAIN, lateness_s=30, idle_s=60)
    for t in range(0, 60, 15):
        a.add("f1", "m1", T0 + t * S, 10.0, arrival_ms=T0 + t * S)
    assert a.advance("f1") == []
    last_arrival = T0 + 45 * S
    assert a.advance_idle(last_arrival + 59 * S) == []  # not idle long enough
    # Idle 60 s: event time assumed at 45 + 60 = 105 s, watermark 75 s: minute 0 closes.
    out = a.advance_idle(last_arrival + 60 * S)
    assert [(r.scope, r.window) for r in out] == [(Scope.METER, WindowName.MIN_1),
                                                  (Scope.FACILITY, WindowName.MIN_1)]
    assert a.add("f1", "m1", T0 + 50 * S, 1.0, arrival_ms=0) is Outcome.LATE


def test_lateness_does_not_depend_on_where_a_batch_ends() -> None:
    a = agg(MAIN)
    # No advance() between these, as inside one batch: the 120 s sample moves the watermark
    # to 90 s, so minute 0 is due to close and a new sample for it is late right away.
    a.add("f1", "m1", T0 + 120 * S, 10.0, arrival_ms=0)
    assert a.add("f1", "m1", T0 + 30 * S, 10.0, arrival_ms=0) is Outcome.LATE
    # Minute 1 (60-120 s) is still open: 90 s is within the allowed lateness.
    assert a.add("f1", "m1", T0 + 90 * S, 10.0, arrival_ms=0) is Outcome.ACCEPTED
