"""Generated hostile MQTT payloads (issue 13, property 8): whatever a meter or an attacker
publishes, ``validate_reading`` (what the ingest agent calls on every raw payload) returns an
accepted reading or a dead letter with a reason, and never raises. Accepted readings hold the
documented bounds; dead letters keep the payload exactly. Fixed seed, a few seconds."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.deadletter import DeadLetter, RejectReason
from schemas.reading import (
    ACTIVE_POWER_KW_MAX,
    FREQUENCY_HZ_MAX,
    FREQUENCY_HZ_MIN,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    VOLTAGE_V_MAX,
    SensorReading,
)
from schemas.validation import KEPT_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES, decode_reading
from tests.unit.test_validation import NOW, SETTINGS, TOPIC, VALID, validate

pytestmark = pytest.mark.unit

CI = settings(derandomize=True, database=None, deadline=None, max_examples=300,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(raw: bytes, topic: str = TOPIC) -> SensorReading | DeadLetter:
    """The property: a reading within bounds, or a dead letter with a reason and the payload
    as it arrived (its first ``KEPT_PAYLOAD_BYTES``). ``decode_reading`` (the Kafka worker's
    path) holds it too."""
    result = validate(raw, topic)
    decoded = decode_reading(raw, source=topic, now=NOW)
    assert isinstance(decoded, SensorReading | DeadLetter)
    if isinstance(result, SensorReading):
        assert TIMESTAMP_MIN <= result.timestamp < TIMESTAMP_MAX
        assert result.timestamp.utcoffset() == timedelta(0)
        assert result.timestamp - NOW <= timedelta(seconds=SETTINGS.max_future_s)
        assert math.isfinite(result.active_power_kw)
        assert abs(result.active_power_kw) <= ACTIVE_POWER_KW_MAX
        assert 0 <= result.voltage_v <= VOLTAGE_V_MAX
        assert FREQUENCY_HZ_MIN <= result.frequency_hz <= FREQUENCY_HZ_MAX
        return result
    assert isinstance(result, DeadLetter)
    assert result.reason in RejectReason and result.reason is not RejectReason.LATE
    assert result.message
    kept = (result.raw_payload.encode() if result.payload_encoding == "utf-8"
            else base64.b64decode(result.raw_payload))
    if len(raw) <= KEPT_PAYLOAD_BYTES:
        assert kept == raw
    else:  # its first KEPT_PAYLOAD_BYTES (less a cut UTF-8 character), and the message says so
        assert KEPT_PAYLOAD_BYTES - 3 <= len(kept) <= KEPT_PAYLOAD_BYTES
        assert kept == raw[:len(kept)]
        assert result.message.endswith(f"(first {len(kept):,} of {len(raw):,} bytes kept)")
    if len(raw) > MAX_PAYLOAD_BYTES:
        assert result.reason is RejectReason.PAYLOAD_TOO_LARGE
    result.model_dump_json()  # the dead letter itself can be stored and published
    return result


@CI
@given(st.binary(max_size=2048), st.text(max_size=80))
def test_arbitrary_bytes_on_any_topic(raw: bytes, topic: str) -> None:
    check(raw, topic)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=20), children, max_size=6),
    max_leaves=30,
)


@CI
@given(JSON)
def test_arbitrary_json(value: Any) -> None:
    check(json.dumps(value).encode())


def iso(ts: datetime) -> str:
    return json.dumps(ts.isoformat())


OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
TIMESTAMPS = st.one_of(
    # Anywhere from year 1 to 9999 with any offset (the edges have no UTC instant).
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                 timezones=OFFSETS).map(iso),
    st.sampled_from(["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59",
                     "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
                     "1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z"]).map(json.dumps),
    # Near now, so that some land in the accepted window.
    st.datetimes(min_value=datetime(2025, 12, 31), max_value=datetime(2026, 1, 2),
                 timezones=st.just(UTC)).map(iso),
    st.text(max_size=40).map(json.dumps),  # not a time at all
)
NUMBERS = st.one_of(
    st.floats().map(lambda f: json.dumps(f)),  # NaN, Infinity, -0.0, 1e308 as Python writes
    st.integers().map(str),
    st.sampled_from(["1e400", "-1e400", "1" + "0" * 400, "1e-400", "0x10", "+1", ".5", "1.",
                     "01", "true", "null", '"50"', "[]", "{}"]),
    st.floats(-200_000, 200_000).map(repr),
)
STRINGS = st.one_of(
    st.text(max_size=100).map(json.dumps),
    st.sampled_from(["f1\u0000", "\u0000", "m1\u0000junk", "f1\n", "\uff46\uff11", "f1" * 40_000])
    .map(json.dumps),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),  # deep nesting
    st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)
FRAGMENTS = {"timestamp": TIMESTAMPS, "active_power_kw": NUMBERS,
             "reactive_power_kvar": NUMBERS, "voltage_v": NUMBERS, "frequency_hz": NUMBERS,
             "facility_id": STRINGS, "meter_id": STRINGS, "meter_type": STRINGS}


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid reading with one to three fields replaced by extreme values, and sometimes a
    field dropped, repeated or added."""
    fields = dict(VALID)
    for name in draw(st.lists(st.sampled_from(sorted(FRAGMENTS)), min_size=1, max_size=3,
                              unique=True)):
        fields[name] = draw(FRAGMENTS[name])
    body = ", ".join(f'"{k}": {v}' for k, v in fields.items())
    tail = draw(st.sampled_from(["", ', "extra": 1', ', "timestamp": "2026-01-01T11:59:50Z"',
                                 "\u0000", " garbage", ", "]))
    return ("{" + body + tail + "}").encode("utf-8", "surrogatepass")


@CI
@given(near_valid())
def test_near_valid_readings_with_extreme_values(raw: bytes) -> None:
    check(raw)


@settings(derandomize=True, database=None, deadline=None, max_examples=100)
@given(utc=st.datetimes(min_value=datetime(2025, 10, 3, 12), max_value=datetime(2026, 1, 1, 12),
                        timezones=st.just(UTC)),
       offset=OFFSETS,
       kw=st.floats(-ACTIVE_POWER_KW_MAX, ACTIVE_POWER_KW_MAX),
       hz=st.floats(FREQUENCY_HZ_MIN, FREQUENCY_HZ_MAX))
def test_readings_within_every_bound_are_accepted(utc: datetime, offset: timezone, kw: float,
                                                  hz: float) -> None:
    """The bounds refuse only what they name: not an over-eager parser. (From the retention's
    start, 90 days before NOW, to NOW, written with any offset.)"""
    ts = utc.astimezone(offset)
    raw = ("{" + ", ".join(f'"{k}": {v}' for k, v in {
        **VALID, "timestamp": iso(ts), "active_power_kw": repr(kw),
        "frequency_hz": repr(hz)}.items()) + "}").encode()
    result = check(raw)
    assert isinstance(result, SensorReading), result
    assert result.timestamp == ts and result.active_power_kw == kw
