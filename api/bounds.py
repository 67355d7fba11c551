"""The times the API accepts from outside: an exact grammar and an explicit supported range.

Every time a caller gives (a query parameter, a body field) is checked here before any
arithmetic is done with it: a year-1 or year-9999 time would otherwise overflow ``datetime``
as soon as a span, an offset or a grid step is added, and answer 500. The range is wide enough
for any meter history or DR event and narrow enough that adding a few years to either end
stays representable (``datetime.max`` is 9999-12-31).

Supported: ``MIN_TIME`` (1970-01-01T00:00:00Z) <= t < ``MAX_TIME`` (2200-01-01T00:00:00Z).
"""

from __future__ import annotations

from datetime import datetime

from api.errors import ApiError, bad_parameter
from schemas.common import MAX_TIME, MIN_TIME, NAIVE_TIME, RFC3339, in_supported_range

_ISO_8601 = RFC3339
_NAIVE = NAIVE_TIME


__all__ = ["MAX_ECHO_CHARS", "MAX_TIME", "MIN_TIME", "check_time", "parse_time"]


MAX_ECHO_CHARS = 100
"""How much of a refused value ``details.value`` repeats: enough to recognise it, never a
whole hostile input."""


def check_time(name: str, ts: datetime, *, raw: str | None = None) -> datetime:
    """``ts`` when it is aware and in the supported range, else 400 ``invalid_parameter``
    naming ``name`` (``raw``, if given, is echoed truncated as ``details.value``)."""
    value = {} if raw is None else {"value": raw[:MAX_ECHO_CHARS]}
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise bad_parameter(name, f"{name} needs a UTC offset, e.g. 2026-01-01T00:00:00Z",
                            **value)
    if not in_supported_range(ts):
        raise bad_parameter(name, f"{name} must be from {MIN_TIME.isoformat()} and before "
                            f"{MAX_TIME.isoformat()}", minimum=MIN_TIME.isoformat(),
                            maximum_exclusive=MAX_TIME.isoformat(), **value)
    return ts


def parse_time(name: str, raw: str) -> datetime:
    """An outside time string (a query parameter) parsed by an exact grammar and checked
    against the range; 400 ``invalid_parameter`` naming ``name`` otherwise."""
    # A '+' typed into a URL arrives as a space: "2026-01-01T00:00:00 00:00" means +00:00.
    if len(raw) > 6 and raw[-6] == " " and raw[-3] == ":":
        raw = raw[:-6] + "+" + raw[-5:]
    if _NAIVE.fullmatch(raw) is not None:
        raise bad_parameter(name, f"{name} needs a UTC offset, e.g. 2026-01-01T00:00:00Z",
                            value=raw)
    if _ISO_8601.fullmatch(raw) is None:
        raise _not_a_time(name, raw)
    try:
        ts = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:  # month 13, hour 25, offset +24:00...
        raise _not_a_time(name, raw) from None
    return check_time(name, ts, raw=raw)


def _not_a_time(name: str, raw: str) -> ApiError:
    return bad_parameter(name, f"{name} must be an ISO 8601 timestamp with an offset, e.g. "
                         "2026-01-01T00:00:00Z", value=raw[:MAX_ECHO_CHARS])
