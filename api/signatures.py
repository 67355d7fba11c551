"""HMAC signatures of utility webhooks.

A utility signs each webhook with its secret (``sems utility add`` prints it once):

    X-SEMS-Utility:   <utility id>
    X-SEMS-Timestamp: <unix seconds when sent>
    X-SEMS-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

The timestamp is inside the signed text and must be within ``tolerance_s`` of our clock, so a
captured request cannot be replayed later; several ``v1=`` values separated by commas let a
utility sign with an old and a new secret while it rotates. The scheme is Stripe's and
Slack's, which most webhook senders already implement."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

SCHEME = "v1"
UTILITY_HEADER = "X-SEMS-Utility"
TIMESTAMP_HEADER = "X-SEMS-Timestamp"
SIGNATURE_HEADER = "X-SEMS-Signature"
DEFAULT_TOLERANCE_S = 300.0


class SignatureError(Exception):
    """Why a webhook's signature is refused; safe to show to the sender."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-SEMS-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def verify(secret: str, *, timestamp: str | None, signature: str | None, body: bytes,
           now: datetime, tolerance_s: float = DEFAULT_TOLERANCE_S) -> None:
    if not timestamp or not signature:
        raise SignatureError(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    try:
        sent_s = int(timestamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be unix seconds") from None
    skew_s = abs(now.timestamp() - sent_s)
    if skew_s > tolerance_s:
        raise SignatureError(f"{TIMESTAMP_HEADER} is {skew_s:.0f} s from our clock (at most "
                             f"{tolerance_s:.0f} s): check the sender's clock, or a replay")
    expected = sign(secret, sent_s, body)
    offered = [v.strip() for v in signature.split(",") if v.strip().startswith(f"{SCHEME}=")]
    if not offered:
        raise SignatureError(f"{SIGNATURE_HEADER} has no {SCHEME}= value")
    # Compare every offered value, not stopping at the first match: constant time overall.
    matched = [hmac.compare_digest(expected, v) for v in offered]
    if not any(matched):
        raise SignatureError("the signature does not match the body")
