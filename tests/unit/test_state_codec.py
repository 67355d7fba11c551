"""Window state survives serialisation: continuing from a reloaded state gives exactly the
rollups of an uninterrupted run."""

import orjson
import pytest

from schemas.metadata import Facility, Meter, MeterType, Registry
from schemas.rollup import Rollup
from tables.codec import dump_state, load_state
from tables.rollups import RollupAggregator, WindowSettings

pytestmark = pytest.mark.unit

S = 1000
T0 = 1_767_225_600_000
REG = Registry.build(
    [Facility(facility_id="f1", name="Site", contract_demand_kw=100)],
    [Meter(meter_id="m1", facility_id="f1", meter_type=MeterType.MAIN),
     Meter(meter_id="m2", facility_id="f1", meter_type=MeterType.MAIN, sample_interval_s=20),
     Meter(meter_id="h1", facility_id="f1", meter_type=MeterType.HVAC)],
)


def run(a: RollupAggregator, start_s: int, end_s: int) -> list[Rollup]:
    out: list[Rollup] = []
    for t in range(start_s, end_s, 5):
        for i, meter in enumerate(("m1", "m2", "h1")):
            if (t + 5 * i) % 15 == 0 or (meter == "m2" and t % 20 == 0):
                a.add("f1", meter, T0 + t * S, 10.0 + (t % 7) + i, arrival_ms=T0 + t * S)
        out.extend(a.advance("f1"))
    return out


def test_reloaded_state_continues_exactly() -> None:
    settings = WindowSettings()
    straight = RollupAggregator(REG, settings)
    expected = run(straight, 0, 5000)

    first = RollupAggregator(REG, settings)
    before = run(first, 0, 2437)  # stop mid-minute, mid-quarter, mid-hour
    blob = orjson.dumps(dump_state(first.facilities["f1"]))
    second = RollupAggregator(REG, settings)
    second.facilities["f1"] = load_state(orjson.loads(blob))
    after = run(second, 2440, 5000)
    assert before + after == expected


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        load_state({"v": 99})
