"""Turn raw MQTT payloads into ``SensorReading``s or ``DeadLetter``s with a precise reason.

Parsing and type checks run in one pass through pydantic's JSON mode with strict JSON typing
(a number must be a JSON number, not a string); registry and clock checks follow.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from schemas.deadletter import DeadLetter, RejectReason
from schemas.metadata import Registry
from schemas.reading import TIMESTAMP_OUT_OF_RANGE, SensorReading

TOPIC_PREFIX = "meters"
"""Readings are published on ``meters/{facility_id}/{meter_id}``."""

# Most specific reasons first: when a payload has several problems, the first listed wins.
_ERROR_TYPE_REASONS: list[tuple[RejectReason, tuple[str, ...]]] = [
    (RejectReason.MALFORMED_JSON, ("json_invalid",)),
    (RejectReason.NOT_AN_OBJECT, ("model_type", "model_attributes_type", "dict_type")),
    (RejectReason.MISSING_FIELD, ("missing",)),
    (RejectReason.UNKNOWN_FIELD, ("extra_forbidden",)),
    (RejectReason.NON_FINITE, ("finite_number",)),
    (RejectReason.NAIVE_TIMESTAMP, ("timezone_aware",)),
    (RejectReason.INVALID_ID, ("string_pattern_mismatch",)),
    (
        RejectReason.OUT_OF_RANGE,
        ("greater_than_equal", "less_than_equal", "greater_than", "less_than",
         TIMESTAMP_OUT_OF_RANGE),
    ),
]


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    max_future_s: float = 300.0
    """Readings stamped further ahead of the server clock are refused: a meter with a wrong
    clock would otherwise drag the watermark forward and make everyone else late."""
    max_age_s: float | None = None
    """Readings older than this (the raw-data retention) are refused: the store would drop
    them at once (SQLite's pruning) or refuse them (InfluxDB, outside a bucket's retention)."""


def reason_for(errors: list[dict[str, Any]]) -> tuple[RejectReason, dict[str, Any]]:
    """The reason for a set of pydantic errors, and the error that decided it."""
    for reason, error_types in _ERROR_TYPE_REASONS:
        for e in errors:
            if e["type"] in error_types:
                return reason, e
    return RejectReason.WRONG_TYPE, errors[0]


MAX_PAYLOAD_BYTES = 16_384
"""The largest payload parsed as a reading. A reading is under 400 bytes; anything much larger
is garbage or an attack, refused (``payload_too_large``) before it is parsed."""
KEPT_PAYLOAD_BYTES = 2_048
"""A dead letter keeps at most the first this many bytes of its payload (and says so): a
garbage message of megabytes must not become megabytes in the store, on the dead-letter
topic and in every ``GET /api/dead-letters`` answer."""


def encode_payload(payload: bytes) -> tuple[str, str]:
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


def _prefix(payload: bytes, size: int) -> bytes:
    """The first ``size`` bytes, or up to 3 fewer so as not to cut a UTF-8 character in two
    (a text payload stays text, not base64)."""
    kept = payload[:size]
    try:
        kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.start >= size - 3:
            return kept[:exc.start]
    return kept


def dead_letter(
    reason: RejectReason,
    message: str,
    *,
    payload: bytes,
    source: str,
    received_at: datetime,
    details: list[dict[str, Any]] | None = None,
) -> DeadLetter:
    if len(payload) > KEPT_PAYLOAD_BYTES:
        kept = _prefix(payload, KEPT_PAYLOAD_BYTES)
        message = f"{message} (first {len(kept):,} of {len(payload):,} bytes kept)"
        payload = kept
    text, encoding = encode_payload(payload)
    return DeadLetter(
        reason=reason,
        message=message,
        details=details or [],
        source=source,
        received_at=received_at,
        raw_payload=text,
        payload_encoding=encoding,
    )


def _clean_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors without the echoed input and URLs: small, JSON-safe, no secrets."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or None, "type": e["type"], "msg": e["msg"]}
        for e in errors
    ]


def decode_reading(payload: bytes, *, source: str, now: datetime) -> SensorReading | DeadLetter:
    """Parse and type-check one reading (the ``sensor-readings`` contract) without the registry
    and clock checks; a dead letter with the reason if it does not hold. Never raises."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return dead_letter(
            RejectReason.PAYLOAD_TOO_LARGE,
            f"payload_too_large: {len(payload):,} bytes, more than the "
            f"{MAX_PAYLOAD_BYTES:,} a reading may have",
            payload=payload, source=source, received_at=now)
    try:
        return SensorReading.model_validate_json(payload)
    except ValidationError as exc:
        details = _clean_errors(exc.errors())
        reason, first = reason_for(details)
        where = f" at {first['field']}" if first["field"] else ""
        return dead_letter(
            reason, f"{reason.value}{where}: {first['msg']}",
            payload=payload, source=source, received_at=now, details=details,
        )


def validate_reading(
    payload: bytes,
    *,
    topic: str,
    registry: Registry,
    now: datetime,
    settings: ValidationSettings,
) -> SensorReading | DeadLetter:
    """Validate one payload published on ``topic``. Never raises on bad input."""
    reading = decode_reading(payload, source=topic, now=now)
    if isinstance(reading, DeadLetter):
        return reading

    def reject(reason: RejectReason, message: str) -> DeadLetter:
        return dead_letter(reason, message, payload=payload, source=topic, received_at=now)

    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == TOPIC_PREFIX and (
        parts[1] != reading.facility_id or parts[2] != reading.meter_id
    ):
        return reject(
            RejectReason.TOPIC_MISMATCH,
            f"payload names {reading.facility_id}/{reading.meter_id} but was published on {topic}",
        )
    if reading.facility_id not in registry.facilities:
        return reject(RejectReason.UNKNOWN_FACILITY, f"unknown facility {reading.facility_id!r}")
    meter = registry.meters.get(reading.meter_id)
    if meter is None:
        return reject(RejectReason.UNKNOWN_METER, f"unknown meter {reading.meter_id!r}")
    if meter.facility_id != reading.facility_id or meter.meter_type != reading.meter_type:
        return reject(
            RejectReason.METER_MISMATCH,
            f"meter {meter.meter_id} is registered as {meter.meter_type.value} at "
            f"{meter.facility_id}, payload says {reading.meter_type.value} at "
            f"{reading.facility_id}",
        )
    if reading.timestamp - now > timedelta(seconds=settings.max_future_s):
        return reject(
            RejectReason.FUTURE_TIMESTAMP,
            f"timestamp {reading.timestamp.isoformat()} is more than "
            f"{settings.max_future_s:g} s ahead of the server clock {now.isoformat()}",
        )
    if settings.max_age_s is not None and now - reading.timestamp > timedelta(
            seconds=settings.max_age_s):
        return reject(
            RejectReason.EXPIRED_TIMESTAMP,
            f"timestamp {reading.timestamp.isoformat()} is older than the raw-data retention "
            f"({settings.max_age_s / 86_400:g} days before {now.isoformat()})",
        )
    return reading
