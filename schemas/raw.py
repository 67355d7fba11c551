"""The ``raw`` channel's record: a meter's payload as it arrived (MQTT topic, bytes, when),
before validation. Its acknowledgement (the PUBACK the broker waits for) travels beside it, as
every value's does (``core.acks``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A payload as it arrived, before validation."""

    topic: str
    payload: bytes
    received_at: datetime
