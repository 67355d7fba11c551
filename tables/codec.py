"""Serialise one facility's window state, so that a changelog-backed table can hold it.

JSON-safe dicts with string keys; floats and ints survive a round trip exactly.
"""

from __future__ import annotations

from typing import Any

from tables.rollups import FacilityWindows
from tables.windows import COMPOSED_WINDOWS, Accumulator

STATE_VERSION = 1


def _acc(a: Accumulator) -> list[Any]:
    return [a.energy_kwh, a.covered_ms, a.sample_count, a.max_kw, a.min_kw]


def _unacc(v: list[Any]) -> Accumulator:
    return Accumulator(energy_kwh=v[0], covered_ms=v[1], sample_count=v[2], max_kw=v[3],
                       min_kw=v[4])


def dump_state(st: FacilityWindows) -> dict[str, Any]:
    return {
        "v": STATE_VERSION,
        "facility_id": st.facility_id,
        "closed_until_ms": st.closed_until_ms,
        "max_ts_ms": st.max_ts_ms,
        "last_arrival_ms": st.last_arrival_ms,
        "minutes": {
            str(start): {m: [[ts, kw] for ts, kw in samples.items()]
                         for m, samples in meters.items()}
            for start, meters in st.minutes.items()
        },
        "carry": {m: [ts, kw] for m, (ts, kw) in st.carry.items()},
        "meter_accs": {
            w.value: {str(start): {m: _acc(a) for m, a in per.items()}
                      for start, per in st.meter_accs[w].items()}
            for w in COMPOSED_WINDOWS
        },
        "facility_accs": {
            w.value: {str(start): _acc(a) for start, a in st.facility_accs[w].items()}
            for w in COMPOSED_WINDOWS
        },
    }


def load_state(d: dict[str, Any]) -> FacilityWindows:
    if d.get("v") != STATE_VERSION:
        raise ValueError(f"unsupported window state version {d.get('v')!r}")
    st = FacilityWindows(
        d["facility_id"],
        closed_until_ms=d["closed_until_ms"],
        max_ts_ms=d["max_ts_ms"],
        last_arrival_ms=d["last_arrival_ms"],
    )
    st.minutes = {
        int(start): {m: {int(ts): float(kw) for ts, kw in samples}
                     for m, samples in meters.items()}
        for start, meters in d["minutes"].items()
    }
    st.carry = {m: (int(v[0]), float(v[1])) for m, v in d["carry"].items()}
    for w in COMPOSED_WINDOWS:
        st.meter_accs[w] = {
            int(start): {m: _unacc(a) for m, a in per.items()}
            for start, per in d["meter_accs"][w.value].items()
        }
        st.facility_accs[w] = {
            int(start): _unacc(a) for start, a in d["facility_accs"][w.value].items()
        }
    return st

