"""The ``sensor-readings.dlq`` record: an input that SEMS refused, with the reason and the
raw payload, so that nothing is lost silently."""

from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict


class RejectReason(StrEnum):
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    INVALID_ID = "invalid_id"
    NAIVE_TIMESTAMP = "naive_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    EXPIRED_TIMESTAMP = "expired_timestamp"
    UNKNOWN_FACILITY = "unknown_facility"
    UNKNOWN_METER = "unknown_meter"
    METER_MISMATCH = "meter_mismatch"
    TOPIC_MISMATCH = "topic_mismatch"
    LATE = "late"


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: RejectReason
    message: str
    details: list[dict[str, Any]] = []
    source: str
    """Where the input came from, e.g. the MQTT topic it was published on."""
    received_at: AwareDatetime
    raw_payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
