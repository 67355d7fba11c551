"""Aware times as integer epoch microseconds, exactly (no float on the way): how the identity
tables (SQLite) and the Redis sessions keep times, to the microsecond PostgreSQL keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def us(ts: datetime) -> int:
    return (ts - EPOCH) // _US


def dt(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)
