"""Utility API keys: ``sems_uk_<key id>_<secret>``, stored as the secret's SHA-256.

The key id (public, 16 hex digits) finds the record; the secret (32 random bytes) is compared by
digest in constant time. A plain SHA-256 is the right hash here, unlike for passwords: the secret
has 256 bits of entropy, so there is nothing to brute-force, and a fast hash keeps the check cheap
on every request (GitHub and Stripe store their tokens the same way)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from schemas.access import ApiKeyRecord

PREFIX = "sems_uk_"
_FORMAT = re.compile(r"^sems_uk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class IssuedKey:
    key: str
    """The full key: shown to the operator once, never stored."""
    record: ApiKeyRecord


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(utility_id: str, *, now: datetime) -> IssuedKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = ApiKeyRecord(key_id=key_id, utility_id=utility_id, key_sha256=digest(secret),
                          created_at=now)
    return IssuedKey(key=f"{PREFIX}{key_id}_{secret}", record=record)


def parse(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)``, or ``None`` when the text is not shaped like a SEMS key."""
    match = _FORMAT.match(key)
    return (match[1], match[2]) if match else None


def matches(record: ApiKeyRecord, secret: str) -> bool:
    return hmac.compare_digest(record.key_sha256, digest(secret))
