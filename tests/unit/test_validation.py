"""Validation of raw meter payloads: one case per dead-letter reason (``late`` is decided by the
rollup agent and tested there), with the raw payload kept exactly as it arrived."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from schemas.deadletter import DeadLetter, RejectReason
from schemas.metadata import Facility, Meter, MeterType, Registry
from schemas.reading import SensorReading
from schemas.validation import (
    KEPT_PAYLOAD_BYTES,
    MAX_PAYLOAD_BYTES,
    ValidationSettings,
    validate_reading,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = ValidationSettings(max_future_s=300.0, max_age_s=90 * 86_400.0)
REGISTRY = Registry.build(
    [
        Facility(facility_id="f1", name="Plant 1", contract_demand_kw=500),
        Facility(facility_id="f2", name="Plant 2", contract_demand_kw=200),
    ],
    [
        Meter(meter_id="m1", facility_id="f1", meter_type=MeterType.MAIN,
              sample_interval_s=15.0),
        Meter(meter_id="h1", facility_id="f1", meter_type=MeterType.HVAC,
              sample_interval_s=15.0),
        Meter(meter_id="m2", facility_id="f2", meter_type=MeterType.MAIN,
              sample_interval_s=15.0),
    ],
)
TOPIC = "meters/f1/m1"

# A valid reading of meter m1, field by field as JSON text, so that a case can swap in any
# JSON fragment (a string where a number belongs, 1e400, NaN) exactly as a meter would send it.
VALID: dict[str, str] = {
    "facility_id": '"f1"',
    "meter_id": '"m1"',
    "meter_type": '"main"',
    "timestamp": '"2026-01-01T11:59:45Z"',
    "active_power_kw": "120.5",
    "reactive_power_kvar": "-12.0",
    "voltage_v": "400.0",
    "frequency_hz": "50.01",
}


def payload(*, drop: tuple[str, ...] = (), **fragments: str) -> bytes:
    fields = {**VALID, **fragments}
    for name in drop:
        del fields[name]
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


def validate(raw: bytes, topic: str = TOPIC) -> SensorReading | DeadLetter:
    return validate_reading(raw, topic=topic, registry=REGISTRY, now=NOW, settings=SETTINGS)


ID_65 = "a" * 65
ID_64 = "a" * 64


@pytest.mark.parametrize(
    ("raw", "topic", "reason", "mentions"),
    [
        # -- not JSON at all --------------------------------------------------------------
        pytest.param(b'{"facility_id": "f1",', TOPIC, RejectReason.MALFORMED_JSON,
                     "Invalid JSON", id="truncated-json"),
        pytest.param(b"meter says hi", TOPIC, RejectReason.MALFORMED_JSON, "Invalid JSON",
                     id="plain-text"),
        pytest.param(b"", TOPIC, RejectReason.MALFORMED_JSON, "Invalid JSON",
                     id="empty-payload"),
        # -- JSON, but not an object --------------------------------------------------------
        pytest.param(b"[" + payload() + b"]", TOPIC, RejectReason.NOT_AN_OBJECT, "object",
                     id="list-of-readings"),
        pytest.param(b"42", TOPIC, RejectReason.NOT_AN_OBJECT, "object", id="number"),
        pytest.param(b'"120.5"', TOPIC, RejectReason.NOT_AN_OBJECT, "object", id="string"),
        pytest.param(b"null", TOPIC, RejectReason.NOT_AN_OBJECT, "object", id="null"),
        # -- fields missing or extra --------------------------------------------------------
        pytest.param(payload(drop=("voltage_v",)), TOPIC, RejectReason.MISSING_FIELD,
                     "voltage_v", id="missing-voltage"),
        pytest.param(payload(drop=("timestamp",)), TOPIC, RejectReason.MISSING_FIELD,
                     "timestamp", id="missing-timestamp"),
        pytest.param(payload(colour='"red"'), TOPIC, RejectReason.UNKNOWN_FIELD, "colour",
                     id="unknown-field"),
        # Several problems: the most specific reason wins, missing before unknown.
        pytest.param(payload(drop=("frequency_hz",), colour='"red"'), TOPIC,
                     RejectReason.MISSING_FIELD, "frequency_hz", id="missing-and-unknown"),
        # -- wrong JSON types: strict, no coercion ------------------------------------------
        pytest.param(payload(active_power_kw='"12.5"'), TOPIC, RejectReason.WRONG_TYPE,
                     "active_power_kw", id="number-as-string"),
        pytest.param(payload(active_power_kw="true"), TOPIC, RejectReason.WRONG_TYPE,
                     "active_power_kw", id="bool-for-number"),
        pytest.param(payload(voltage_v="null"), TOPIC, RejectReason.WRONG_TYPE, "voltage_v",
                     id="null-for-number"),
        pytest.param(payload(facility_id="1"), TOPIC, RejectReason.WRONG_TYPE, "facility_id",
                     id="number-for-id"),
        pytest.param(payload(meter_type='"solar"'), TOPIC, RejectReason.WRONG_TYPE,
                     "meter_type", id="unknown-meter-type"),
        pytest.param(payload(timestamp="1767268785"), TOPIC, RejectReason.WRONG_TYPE,
                     "timestamp", id="epoch-number-timestamp"),
        pytest.param(payload(timestamp='"yesterday"'), TOPIC, RejectReason.WRONG_TYPE,
                     "timestamp", id="unparseable-timestamp"),
        # -- non-finite numbers ------------------------------------------------------------
        # 1e400 is valid JSON but overflows a double to +inf; pydantic's parser then reports
        # finite_number because the model forbids inf/nan.
        pytest.param(payload(active_power_kw="1e400"), TOPIC, RejectReason.NON_FINITE,
                     "active_power_kw", id="overflow-to-inf"),
        pytest.param(payload(reactive_power_kvar="-1e400"), TOPIC, RejectReason.NON_FINITE,
                     "reactive_power_kvar", id="overflow-to-minus-inf"),
        # NaN and Infinity are not JSON, but pydantic's parser accepts the tokens; the model
        # then refuses them as non-finite rather than as malformed JSON.
        pytest.param(payload(frequency_hz="NaN"), TOPIC, RejectReason.NON_FINITE,
                     "frequency_hz", id="nan-token"),
        pytest.param(payload(voltage_v="Infinity"), TOPIC, RejectReason.NON_FINITE,
                     "voltage_v", id="infinity-token"),
        # -- physical ranges (schemas/reading.py) ------------------------------------------
        pytest.param(payload(frequency_hz="0.5"), TOPIC, RejectReason.OUT_OF_RANGE,
                     "frequency_hz", id="frequency-below-45"),
        pytest.param(payload(frequency_hz="65.01"), TOPIC, RejectReason.OUT_OF_RANGE,
                     "frequency_hz", id="frequency-above-65"),
        pytest.param(payload(voltage_v="-1"), TOPIC, RejectReason.OUT_OF_RANGE, "voltage_v",
                     id="negative-voltage"),
        pytest.param(payload(active_power_kw="1e6"), TOPIC, RejectReason.OUT_OF_RANGE,
                     "active_power_kw", id="power-1GW"),
        pytest.param(payload(reactive_power_kvar="-100000.5"), TOPIC,
                     RejectReason.OUT_OF_RANGE, "reactive_power_kvar", id="kvar-below-min"),
        # -- identifiers -------------------------------------------------------------------
        pytest.param(payload(facility_id='"bad id!"'), "meters/x/m1", RejectReason.INVALID_ID,
                     "facility_id", id="id-with-space-and-bang"),
        pytest.param(payload(meter_id=f'"{ID_65}"'), "meters/f1/x", RejectReason.INVALID_ID,
                     "meter_id", id="id-65-chars"),
        pytest.param(payload(meter_id='"-m1"'), "meters/f1/x", RejectReason.INVALID_ID,
                     "meter_id", id="id-leading-dash"),
        # 64 characters is still a valid id: it gets as far as the registry.
        pytest.param(payload(meter_id=f'"{ID_64}"'), f"meters/f1/{ID_64}",
                     RejectReason.UNKNOWN_METER, ID_64, id="id-64-chars-is-valid"),
        # -- timestamps --------------------------------------------------------------------
        pytest.param(payload(timestamp='"2026-01-01T11:59:45"'), TOPIC,
                     RejectReason.NAIVE_TIMESTAMP, "timestamp", id="naive-timestamp"),
        # NOW is 12:00:00Z and max_future_s 300: 12:05:00.001Z is 1 ms too far ahead.
        pytest.param(payload(timestamp='"2026-01-01T12:05:00.001Z"'), TOPIC,
                     RejectReason.FUTURE_TIMESTAMP, "2026-01-01T12:05:00.001", id="future-1ms"),
        # 14:06+02:00 is 12:06Z: 360 s ahead, whatever the offset.
        pytest.param(payload(timestamp='"2026-01-01T14:06:00+02:00"'), TOPIC,
                     RejectReason.FUTURE_TIMESTAMP, "300 s ahead", id="future-with-offset"),
        # max_age_s is 90 days: 2025-10-03T12:00:00Z is exactly that, one second more is out.
        pytest.param(payload(timestamp='"2025-10-03T11:59:59Z"'), TOPIC,
                     RejectReason.EXPIRED_TIMESTAMP, "90 days", id="older-than-retention"),
        # No UTC datetime exists for these two (00:07+05:00 on 1 January of year 1 is 19:07 on
        # 31 December of year 0): they raised OverflowError and stopped the ingest agent.
        pytest.param(payload(timestamp='"0001-01-01T00:07:00+05:00"'), TOPIC,
                     RejectReason.OUT_OF_RANGE, "1970-01-01", id="year-1-east-of-utc"),
        pytest.param(payload(timestamp='"9999-12-31T23:00:00-05:00"'), TOPIC,
                     RejectReason.OUT_OF_RANGE, "2100-01-01", id="year-9999-west-of-utc"),
        # The supported range, [1970-01-01, 2100-01-01) UTC, checked before the clock.
        pytest.param(payload(timestamp='"1969-12-31T23:59:59.999Z"'), TOPIC,
                     RejectReason.OUT_OF_RANGE, "timestamp", id="before-1970"),
        pytest.param(payload(timestamp='"2100-01-01T00:00:00Z"'), TOPIC,
                     RejectReason.OUT_OF_RANGE, "timestamp", id="from-2100"),
        pytest.param(payload(timestamp='"2100-01-01T00:59:59+01:00"'), TOPIC,
                     RejectReason.FUTURE_TIMESTAMP, "2099-12-31T23:59:59", id="2099-in-range"),
        # -- registry ----------------------------------------------------------------------
        pytest.param(payload(facility_id='"f9"'), "meters/f9/m1", RejectReason.UNKNOWN_FACILITY,
                     "f9", id="unknown-facility"),
        pytest.param(payload(meter_id='"m9"'), "meters/f1/m9", RejectReason.UNKNOWN_METER,
                     "m9", id="unknown-meter"),
        # m1 is registered as a main meter; the payload calls it hvac.
        pytest.param(payload(meter_type='"hvac"'), TOPIC, RejectReason.METER_MISMATCH,
                     "registered as main", id="meter-type-differs"),
        # m2 belongs to f2, the payload files it under f1.
        pytest.param(payload(meter_id='"m2"'), "meters/f1/m2", RejectReason.METER_MISMATCH,
                     "at f2", id="meter-of-another-facility"),
        # -- topic -------------------------------------------------------------------------
        pytest.param(payload(), "meters/f1/h1", RejectReason.TOPIC_MISMATCH, "meters/f1/h1",
                     id="topic-names-other-meter"),
        pytest.param(payload(), "meters/f2/m1", RejectReason.TOPIC_MISMATCH, "f1/m1",
                     id="topic-names-other-facility"),
    ],
)
def test_rejections(raw: bytes, topic: str, reason: RejectReason, mentions: str) -> None:
    result = validate(raw, topic)
    assert isinstance(result, DeadLetter), f"expected {reason.value}, got a valid reading"
    assert result.reason is reason, result.message
    assert result.message
    assert mentions in result.message
    assert result.source == topic
    assert result.received_at == NOW
    assert (result.raw_payload, result.payload_encoding) == (raw.decode("utf-8"), "utf-8")


def test_every_reason_but_late_has_a_case() -> None:
    covered = {
        RejectReason.PAYLOAD_TOO_LARGE, RejectReason.MALFORMED_JSON,
        RejectReason.NOT_AN_OBJECT, RejectReason.MISSING_FIELD,
        RejectReason.UNKNOWN_FIELD, RejectReason.WRONG_TYPE, RejectReason.NON_FINITE,
        RejectReason.OUT_OF_RANGE, RejectReason.INVALID_ID, RejectReason.NAIVE_TIMESTAMP,
        RejectReason.FUTURE_TIMESTAMP, RejectReason.EXPIRED_TIMESTAMP,
        RejectReason.UNKNOWN_FACILITY, RejectReason.UNKNOWN_METER,
        RejectReason.METER_MISMATCH, RejectReason.TOPIC_MISMATCH,
    }
    assert set(RejectReason) - covered == {RejectReason.LATE}


def test_schema_errors_carry_details_without_the_input() -> None:
    result = validate(payload(active_power_kw='"12.5"', voltage_v="-1"))
    assert isinstance(result, DeadLetter)
    # Both problems are listed; the echoed input is left out of the details.
    assert result.details == [
        {"field": "active_power_kw", "type": "float_type", "msg": "Input should be a valid number"},
        {"field": "voltage_v", "type": "greater_than_equal",
         "msg": "Input should be greater than or equal to 0"},
    ]
    # wrong_type is only the fallback, so the more specific out_of_range wins.
    assert result.reason is RejectReason.OUT_OF_RANGE


def test_message_names_the_error_that_decided_the_reason() -> None:
    # A wrong type at active_power_kw and a negative voltage: the reason is out_of_range, so
    # the message should be about voltage_v, not about the first error pydantic listed.
    result = validate(payload(active_power_kw='"12.5"', voltage_v="-1"))
    assert isinstance(result, DeadLetter)
    assert result.reason is RejectReason.OUT_OF_RANGE
    assert result.message == (
        "out_of_range at voltage_v: Input should be greater than or equal to 0"
    ), f"message describes another error than its reason: {result.message!r}"


def test_non_utf8_payload_is_kept_as_base64() -> None:
    raw = b"\xff\xfe{\x00\x80"
    result = validate(raw)
    assert isinstance(result, DeadLetter)
    assert result.reason is RejectReason.MALFORMED_JSON
    assert result.payload_encoding == "base64"
    assert base64.b64decode(result.raw_payload) == raw


def test_utf8_payload_is_kept_verbatim() -> None:
    # Non-ASCII but valid UTF-8, with odd spacing: stored character for character.
    raw = '{ "facility_id" : "usine-é", "x":1 }'.encode()
    result = validate(raw, "meters/usine/m1")
    assert isinstance(result, DeadLetter)
    assert result.payload_encoding == "utf-8"
    assert result.raw_payload.encode("utf-8") == raw


def test_valid_reading_passes() -> None:
    result = validate(payload())
    assert result == SensorReading(
        facility_id="f1",
        meter_id="m1",
        meter_type=MeterType.MAIN,
        timestamp=datetime(2026, 1, 1, 11, 59, 45, tzinfo=UTC),
        active_power_kw=120.5,
        reactive_power_kvar=-12.0,
        voltage_v=400.0,
        frequency_hz=50.01,
    )


def test_integer_json_numbers_are_accepted_for_floats() -> None:
    result = validate(payload(active_power_kw="120", voltage_v="400"))
    assert isinstance(result, SensorReading)
    assert (result.active_power_kw, result.voltage_v) == (120.0, 400.0)


def test_offset_timestamp_is_the_same_instant() -> None:
    # 13:59:45+02:00 is 11:59:45Z.
    result = validate(payload(timestamp='"2026-01-01T13:59:45+02:00"'))
    assert isinstance(result, SensorReading)
    assert result.timestamp == datetime(2026, 1, 1, 11, 59, 45, tzinfo=UTC)


def test_offset_timestamp_is_normalised_to_utc() -> None:
    """The exported contract says the timestamp is "normalised to UTC"; readings passed on to
    ``sensor-readings`` should therefore carry offset zero whatever the meter sent."""
    result = validate(payload(timestamp='"2026-01-01T13:59:45+02:00"'))
    assert isinstance(result, SensorReading)
    assert result.timestamp.utcoffset() == timedelta(0), (
        f"timestamp kept the meter's offset ({result.timestamp.isoformat()}); "
        "SensorReading.timestamp is documented as normalised to UTC"
    )


@pytest.mark.parametrize(
    "timestamp",
    [
        '"2026-01-01T12:05:00Z"',  # exactly max_future_s (300 s) ahead: accepted
        '"2026-01-01T14:05:00+02:00"',  # the same instant with an offset
        '"2026-01-01T12:00:00Z"',  # now
        '"2025-12-31T12:00:00Z"',  # a day old: lateness, not validation, judges this
        '"2025-10-03T12:00:00Z"',  # exactly max_age_s (90 days) old: accepted
    ],
)
def test_timestamps_up_to_max_future_are_accepted(timestamp: str) -> None:
    assert isinstance(validate(payload(timestamp=timestamp)), SensorReading)


def test_submeter_reading_passes() -> None:
    raw = payload(meter_id='"h1"', meter_type='"hvac"')
    result = validate(raw, "meters/f1/h1")
    assert isinstance(result, SensorReading)
    assert result.meter_type is MeterType.HVAC


def test_topic_outside_the_meters_layout_is_not_checked() -> None:
    # Only meters/{facility}/{meter} topics are compared with the payload.
    assert isinstance(validate(payload(), "replay"), SensorReading)


def test_a_payload_over_the_bound_is_refused_unparsed_and_kept_in_part() -> None:
    """A valid reading padded past 16 KiB (the soak's garbage): refused before parsing, and
    its dead letter keeps the first 2 KiB and says how much there was, so megabytes of garbage
    do not become megabytes in the store, on the topic and in every dead-letter listing."""
    raw = payload()[:-1] + b', "pad": "' + b"x" * 200_000 + b'"}'
    result = validate(raw)
    assert isinstance(result, DeadLetter)
    assert result.reason is RejectReason.PAYLOAD_TOO_LARGE
    assert f"{len(raw):,} bytes" in result.message and f"{MAX_PAYLOAD_BYTES:,}" in result.message
    assert result.message.endswith(f"(first {KEPT_PAYLOAD_BYTES:,} of {len(raw):,} bytes kept)")
    assert result.raw_payload.encode() == raw[:KEPT_PAYLOAD_BYTES]


def test_a_reading_at_the_bound_is_parsed() -> None:
    raw = payload()
    assert len(raw) < KEPT_PAYLOAD_BYTES < MAX_PAYLOAD_BYTES
    padded = raw[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(raw)) + b"}"
    assert len(padded) == MAX_PAYLOAD_BYTES
    assert isinstance(validate(padded), SensorReading)


def test_a_malformed_payload_under_the_bound_is_kept_in_part_too() -> None:
    raw = b"not json " * 1_000  # 9,000 bytes
    result = validate(raw)
    assert isinstance(result, DeadLetter)
    assert result.reason is RejectReason.MALFORMED_JSON
    assert result.raw_payload.encode() == raw[:KEPT_PAYLOAD_BYTES]
    assert result.message.endswith(f"(first {KEPT_PAYLOAD_BYTES:,} of 9,000 bytes kept)")


def test_a_kept_text_payload_is_not_cut_inside_a_character() -> None:
    """A UTF-8 text cut at 2 KiB in the middle of "é" stays text (not base64), one byte
    shorter, and the message says how much was kept."""
    raw = b"x" * (KEPT_PAYLOAD_BYTES - 1) + "é".encode() * 10
    result = validate(raw)
    assert isinstance(result, DeadLetter)
    assert result.payload_encoding == "utf-8"
    assert result.raw_payload == "x" * (KEPT_PAYLOAD_BYTES - 1)
    assert result.message.endswith(f"(first {KEPT_PAYLOAD_BYTES - 1:,} of {len(raw):,} bytes "
                                   "kept)")


def test_a_binary_payload_is_kept_in_part_as_base64() -> None:
    raw = b"\xff" * 5_000
    result = validate(raw)
    assert isinstance(result, DeadLetter)
    assert result.payload_encoding == "base64"
    assert base64.b64decode(result.raw_payload) == raw[:KEPT_PAYLOAD_BYTES]
