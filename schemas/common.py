"""Field types shared by the contracts."""

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Identifiers are safe as MQTT topic levels, Kafka keys and URL path segments."""

Identifier = Annotated[str, Field(pattern=ID_PATTERN, description="1-64 of [A-Za-z0-9_.-]")]

MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)
"""The supported range of times from outside, ``MIN_TIME <= t < MAX_TIME``: wide enough for
any meter history or DR event, narrow enough that adding spans of years to either end stays
representable (``datetime`` ends at 9999-12-31, and a year-1 time at +05:00 has no UTC)."""


_LOCAL = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
RFC3339 = re.compile(_LOCAL + r"(?:Z|z|[+-][0-9]{2}:[0-9]{2})")
NAIVE_TIME = re.compile(_LOCAL)
"""RFC 3339 with an offset (seconds and fractions optional), and nothing else: no trailing
bytes (a NUL, a second time), no week dates, no naive times, ASCII digits only. Every time
from outside, in a query or in a body, is read by this grammar."""


def in_supported_range(ts: datetime) -> bool:
    """Whether an aware ``ts`` is in the range (comparing aware datetimes never overflows)."""
    return MIN_TIME <= ts < MAX_TIME
