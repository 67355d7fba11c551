"""The soak's RSS measure per SEMS process life (bench/soak_rss.py), worked by hand."""

from dataclasses import asdict

import pytest

from bench.soak_rss import LifeRss, life_rss, worst_growth_mb

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("samples", "warmup_s", "expected"),
    [
        # The first life starts before the load (t < 0): its warm-up counts from t = 0, so the
        # reference is the sample at 60 s (300), not the idle 250 at -20 s; 300 -> 310 is +10,
        # and the slope over (60, 300), (120, 305), (180, 310) is 5 MB a minute.
        ([(-20.0, 250.0), (0.0, 260.0), (30.0, 290.0), (60.0, 300.0), (120.0, 305.0),
          (180.0, 310.0)], 60.0,
         LifeRss(pid=7, from_s=-20.0, to_s=180.0, warm_s=60.0, warm_mb=300.0, end_mb=310.0,
                 peak_mb=310.0, growth_mb=10.0, slope_mb_per_min=5.0)),
        # A life started at 360 s (after the restart) warms until 420 s; the first sample at or
        # after it is 425 s. Growth is end - warm even when the peak was higher in between;
        # two samples after the warm-up give no slope.
        ([(360.0, 270.0), (400.0, 290.0), (425.0, 295.0), (500.0, 280.0)], 60.0,
         LifeRss(pid=7, from_s=360.0, to_s=500.0, warm_s=425.0, warm_mb=295.0, end_mb=280.0,
                 peak_mb=295.0, growth_mb=-15.0, slope_mb_per_min=None)),
        # A life that ended during its warm-up (one sample after it at most) is not measured.
        ([(30.0, 270.0), (50.0, 280.0), (95.0, 282.0)], 60.0,
         LifeRss(pid=7, from_s=30.0, to_s=95.0, warm_s=None, warm_mb=None, end_mb=282.0,
                 peak_mb=282.0, growth_mb=None, slope_mb_per_min=None)),
    ],
)
def test_life_rss(samples: list[tuple[float, float]], warmup_s: float,
                  expected: LifeRss) -> None:
    assert asdict(life_rss(7, samples, warmup_s=warmup_s)) == pytest.approx(asdict(expected))


def test_worst_growth_is_the_largest_measured_life() -> None:
    lives = [life_rss(1, [(0.0, 300.0), (60.0, 310.0), (120.0, 330.0)], warmup_s=60.0),  # +20
             life_rss(2, [(130.0, 280.0), (140.0, 300.0)], warmup_s=60.0),  # not measured
             life_rss(3, [(200.0, 250.0), (260.0, 260.0), (400.0, 265.0)], warmup_s=60.0)]  # +5
    assert worst_growth_mb(lives) == 20.0
    assert worst_growth_mb(lives[1:2]) is None  # nothing measured: the target is missed


def test_no_sample_is_an_error() -> None:
    with pytest.raises(ValueError, match="pid 9"):
        life_rss(9, [], warmup_s=60.0)
