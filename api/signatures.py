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
import re
from datetime import datetime

SCHEME = "v1"
UTILITY_HEADER = "X-SEMS-Utility"
TIMESTAMP_HEADER = "X-SEMS-Timestamp"
SIGNATURE_HEADER = "X-SEMS-Signature"
DEFAULT_TOLERANCE_S = 300.0
TIMESTAMP_GRAMMAR = re.compile(r"[0-9]{1,12}")
"""Unix seconds, ASCII digits only: ``int()`` would also take ``+ts``, `` ts ``, ``1_796``
and other scripts' digits."""
SIGNATURE_GRAMMAR = re.compile(SCHEME + r"=[0-9a-f]{64}")
"""One offered value: lowercase hex of a SHA-256 HMAC, as ``sign`` writes it."""
MAX_OFFERED = 8
"""Signatures compared at most (a rotation needs two)."""


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
    if TIMESTAMP_GRAMMAR.fullmatch(timestamp) is None:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be unix seconds (1 to 12 digits)")
    sent_s = int(timestamp)
    skew_s = abs(now.timestamp() - sent_s)
    if skew_s > tolerance_s:
        raise SignatureError(f"{TIMESTAMP_HEADER} is {skew_s:.0f} s from our clock (at most "
                             f"{tolerance_s:.0f} s): check the sender's clock, or a replay")
    expected = sign(secret, sent_s, body)
    offered = [v.strip() for v in signature.split(",", MAX_OFFERED)[:MAX_OFFERED]]
    offered = [v for v in offered if SIGNATURE_GRAMMAR.fullmatch(v) is not None]
    if not offered:
        raise SignatureError(f"{SIGNATURE_HEADER} has no {SCHEME}= value (64 lowercase hex "
                             "digits)")
    # Compare every offered value, not stopping at the first match: constant time overall.
    # As bytes: compare_digest refuses str with non-ASCII characters (TypeError).
    matched = [hmac.compare_digest(expected.encode(), v.encode()) for v in offered]
    if not any(matched):
        raise SignatureError("the signature does not match the body")
