"""Window arithmetic and sample-and-hold integration, with expected values worked by hand."""

import pytest

from tables.windows import (
    Accumulator,
    Extremes,
    Segment,
    hold_segments,
    total_extremes,
    window_start,
)

pytestmark = pytest.mark.unit

S = 1000  # ms per second


@pytest.mark.parametrize(
    ("ts_ms", "size_ms", "expected"),
    [
        (0, 60 * S, 0),  # the epoch starts a window
        (59_999, 60 * S, 0),  # last ms of the first minute
        (60_000, 60 * S, 60_000),  # windows are [start, end)
        (1_800_000 + 7, 900 * S, 1_800_000),  # 00:30:00.007 -> the 00:30 quarter hour
        (7_199_999, 3600 * S, 3_600_000),  # 01:59:59.999 -> the 01:00 hour
    ],
)
def test_window_start(ts_ms: int, size_ms: int, expected: int) -> None:
    assert window_start(ts_ms, size_ms) == expected


@pytest.mark.parametrize(
    ("samples", "carry", "expected"),
    [
        # Four samples on the 15 s grid cover the whole minute.
        ([(0, 10.0), (15 * S, 20.0), (30 * S, 30.0), (45 * S, 40.0)], None,
         [Segment(0, 15 * S, 10.0), Segment(15 * S, 30 * S, 20.0),
          Segment(30 * S, 45 * S, 30.0), Segment(45 * S, 60 * S, 40.0)]),
        # Two samples missing: each remaining one holds only its 15 s; 30 s uncovered.
        ([(0, 10.0), (45 * S, 40.0)], None,
         [Segment(0, 15 * S, 10.0), Segment(45 * S, 60 * S, 40.0)]),
        # A sample at -5 s holds until +10 s (its 15 s interval), then the grid shifts by 10 s;
        # the last sample at 55 s is cut at the window end after 5 s.
        ([(10 * S, 12.0), (25 * S, 12.0), (40 * S, 12.0), (55 * S, 12.0)], (-5 * S, 8.0),
         [Segment(0, 10 * S, 8.0), Segment(10 * S, 25 * S, 12.0), Segment(25 * S, 40 * S, 12.0),
          Segment(40 * S, 55 * S, 12.0), Segment(55 * S, 60 * S, 12.0)]),
        # A re-report after 5 s ends the first sample's hold early.
        ([(0, 10.0), (5 * S, 20.0)], None,
         [Segment(0, 5 * S, 10.0), Segment(5 * S, 20 * S, 20.0)]),
        # A carry from -20 s stopped holding at -5 s: nothing spills in.
        ([(30 * S, 5.0)], (-20 * S, 8.0), [Segment(30 * S, 45 * S, 5.0)]),
        # A carry cut short by the first sample of the window.
        ([(3 * S, 5.0)], (-10 * S, 8.0), [Segment(0, 3 * S, 8.0), Segment(3 * S, 18 * S, 5.0)]),
    ],
)
def test_hold_segments(samples: list[tuple[int, float]], carry: tuple[int, float] | None,
                       expected: list[Segment]) -> None:
    got = hold_segments(samples, carry=carry, start_ms=0, end_ms=60 * S, interval_ms=15 * S)
    assert got == expected


@pytest.mark.parametrize(
    ("segments", "samples", "energy_kwh", "covered_ms", "avg_kw"),
    [
        # (10+20+30+40) kW x 15 s = 1500 kW.s = 1500/3600 kWh; mean over 60 s = 25 kW.
        ([Segment(0, 15 * S, 10.0), Segment(15 * S, 30 * S, 20.0),
          Segment(30 * S, 45 * S, 30.0), Segment(45 * S, 60 * S, 40.0)], 4,
         1500 / 3600, 60 * S, 25.0),
        # Gap: 10 kW x 15 s + 40 kW x 15 s = 750 kW.s; the mean is over the 30 s covered = 25 kW,
        # not over the minute (which would wrongly say 12.5 kW).
        ([Segment(0, 15 * S, 10.0), Segment(45 * S, 60 * S, 40.0)], 2, 750 / 3600, 30 * S, 25.0),
        # 8 kW x 10 s + 12 kW x 50 s = 680 kW.s -> 680/60 = 11.333 kW.
        ([Segment(0, 10 * S, 8.0), Segment(10 * S, 60 * S, 12.0)], 4, 680 / 3600, 60 * S, 680 / 60),
    ],
)
def test_accumulator_integrates_covered_time(segments: list[Segment], samples: int,
                                             energy_kwh: float, covered_ms: int,
                                             avg_kw: float) -> None:
    acc = Accumulator()
    acc.add_segments(segments, samples)
    assert acc.energy_kwh == pytest.approx(energy_kwh)
    assert acc.covered_ms == covered_ms
    assert acc.avg_kw == pytest.approx(avg_kw)
    assert acc.sample_count == samples


def test_accumulator_without_coverage_has_no_mean() -> None:
    assert Accumulator().avg_kw is None


@pytest.mark.parametrize(
    ("per_meter", "expected"),
    [
        # A steps 10 -> 20 at 30 s; B steps 5 -> 7 -> 9 at 15 s and 45 s.
        # Sums: [0,15) 15, [15,30) 17, [30,45) 27, [45,60) 29.
        ([[Segment(0, 30 * S, 10.0), Segment(30 * S, 60 * S, 20.0)],
          [Segment(0, 15 * S, 5.0), Segment(15 * S, 45 * S, 7.0), Segment(45 * S, 60 * S, 9.0)]],
         Extremes(29.0, 15.0)),
        # Only [15,30) is covered by both: 10 + 7 = 17; partial sums elsewhere don't count.
        ([[Segment(0, 30 * S, 10.0)], [Segment(15 * S, 60 * S, 7.0)]], Extremes(17.0, 17.0)),
        # Never covered together.
        ([[Segment(0, 15 * S, 10.0)], [Segment(30 * S, 45 * S, 7.0)]], None),
        # A main meter with no data at all.
        ([[Segment(0, 60 * S, 10.0)], []], None),
        # One meter: its own extremes.
        ([[Segment(0, 15 * S, 3.0), Segment(15 * S, 30 * S, -2.0)]], Extremes(3.0, -2.0)),
    ],
)
def test_total_extremes(per_meter: list[list[Segment]], expected: Extremes | None) -> None:
    assert total_extremes(per_meter) == expected
