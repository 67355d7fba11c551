"""The ``raw`` channel's record: a meter's payload as it arrived (MQTT topic, bytes, when),
before validation, with the acknowledgement the broker waits for (a PUBACK, sent once the
reading it becomes is stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.channels import Ack


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A payload as it arrived, before validation."""

    topic: str
    payload: bytes
    received_at: datetime
    ack: Ack | None = None
