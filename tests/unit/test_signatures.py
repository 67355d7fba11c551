"""Webhook HMAC signatures against a vector computed independently with OpenSSL:

    printf '1700000000.{"event_id":"E1"}' | openssl dgst -sha256 -hmac 'whsec_test'
"""

from datetime import UTC, datetime, timedelta

import pytest

from api.signatures import SignatureError, sign, verify

pytestmark = pytest.mark.unit

SECRET = "whsec_test"
BODY = b'{"event_id":"E1"}'
SENT = datetime.fromtimestamp(1_700_000_000, UTC)
OPENSSL = "v1=4fd7ce0d6f4bb429b89e9f7e3a0826e7088f541ed0087d81d5214c10cd44cf63"


def test_sign_matches_openssl() -> None:
    assert sign(SECRET, 1_700_000_000, BODY) == OPENSSL


@pytest.mark.parametrize(("signature", "now"), [
    (OPENSSL, SENT),
    (OPENSSL, SENT + timedelta(seconds=300)),  # at the tolerance: still fine
    (OPENSSL, SENT - timedelta(seconds=300)),  # a sender clock ahead of ours
    (f"v1=00ff, {OPENSSL}", SENT),  # rotation: one of several values matches
])
def test_accepted(signature: str, now: datetime) -> None:
    verify(SECRET, timestamp="1700000000", signature=signature, body=BODY, now=now)


@pytest.mark.parametrize(("timestamp", "signature", "body", "now", "why"), [
    ("1700000000", OPENSSL, b'{"event_id":"E2"}', SENT, "does not match"),  # body changed
    ("1700000001", OPENSSL, BODY, SENT, "does not match"),  # timestamp changed
    ("1700000000", OPENSSL, BODY, SENT + timedelta(seconds=301), "301 s"),  # too old: replay
    ("1700000000", OPENSSL.replace("v1=", "v0="), BODY, SENT, "no v1= value"),
    ("yesterday", OPENSSL, BODY, SENT, "unix seconds"),
    (None, OPENSSL, BODY, SENT, "required"),
    ("1700000000", None, BODY, SENT, "required"),
])
def test_refused(timestamp: str | None, signature: str | None, body: bytes, now: datetime,
                 why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        verify(SECRET, timestamp=timestamp, signature=signature, body=body, now=now)


def test_another_secret_does_not_verify() -> None:
    with pytest.raises(SignatureError):
        verify("other", timestamp="1700000000", signature=OPENSSL, body=BODY, now=SENT)
