"""People's records (schemas/identity.py): emails normalised and checked, times kept in UTC,
unknown fields refused."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.identity import (
    EMAIL_MAX_LENGTH,
    SessionRecord,
    User,
    normalise_email,
    sha256_hex,
)

pytestmark = pytest.mark.unit

ATOM = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
atoms = st.text(ATOM, min_size=1, max_size=10)
local_parts = st.lists(atoms, min_size=1, max_size=4).map(".".join).filter(
    lambda s: len(s) <= 64)
labels = st.from_regex(r"\A[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?\Z")
domains = st.tuples(st.lists(labels, min_size=1, max_size=3),
                    st.from_regex(r"\A[A-Za-z]{2,6}\Z")).map(
    lambda t: ".".join([*t[0], t[1]]))
emails = st.tuples(local_parts, domains).map("@".join)


@given(emails, st.sampled_from(["", " ", "\t", "  "]))
def test_a_valid_address_is_accepted_lower_cased_and_stable(email: str, blank: str) -> None:
    normalised = normalise_email(blank + email + blank)
    assert normalised == email.lower()
    assert normalise_email(normalised) == normalised  # idempotent
    assert normalise_email(email.upper()) == normalised  # case does not make another account


@given(st.text(max_size=300))
def test_any_text_is_either_an_address_or_a_value_error(text: str) -> None:
    try:
        normalised = normalise_email(text)
    except ValueError as exc:
        assert str(exc)  # says what is wrong
        return
    assert normalised == normalised.strip().lower()
    assert len(normalised) <= EMAIL_MAX_LENGTH and normalised.count("@") == 1
    assert normalised.isascii()


@pytest.mark.parametrize(("email", "why"), [
    ("", "required"),
    ("alice", "exactly one '@'"),
    ("a@b@example.com", "exactly one '@'"),
    ("@example.com", "before '@'"),
    ("alice..smith@example.com", "before '@'"),  # an empty atom
    (".alice@example.com", "before '@'"),
    ("al ice@example.com", "before '@'"),
    ("a" * 65 + "@example.com", "before '@'"),  # local part over 64
    ("alice@localhost", "after '@'"),  # one label
    ("alice@-example.com", "after '@'"),
    ("alice@example.123", "after '@'"),  # a numeric top-level label
    ("alice@exämple.com", "after '@'"),  # use the xn-- form
    ("a@" + "b" * 60 + "." + ("c" * 60 + ".") * 4 + "com", "at most 254"),
])
def test_a_bad_address_says_why(email: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("'", ".")):
        normalise_email(email)


def test_a_user_is_normalised_and_strict() -> None:
    u = User(user_id="u-1", email=" Alice@Example.com", display_name="Alice",
             created_at=datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))))
    assert u.email == "alice@example.com"
    assert u.created_at.tzinfo is UTC and u.created_at.hour == 12
    with pytest.raises(ValidationError, match="extra"):
        User.model_validate({**u.model_dump(), "is_admin": True})
    with pytest.raises(ValidationError, match="at most 200"):
        u.model_validate({**u.model_dump(), "display_name": "x" * 201})
    with pytest.raises(ValidationError, match="both or neither"):
        u.model_validate({**u.model_dump(), "oidc_issuer": "https://idp.example"})
    with pytest.raises(ValidationError):
        u.model_validate({**u.model_dump(), "created_at": datetime(2026, 3, 1)})  # naive
    with pytest.raises(ValidationError):
        u.model_validate({**u.model_dump(), "status": "suspended"})
    with pytest.raises(ValidationError):
        u.model_validate({**u.model_dump(), "password_hash": "plain text"})
    assert "password_hash" not in repr(u.model_copy(update={"password_hash": "$argon2id$x"}))


def test_a_session_is_live_until_its_idle_or_absolute_expiry() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    s = SessionRecord(session_sha256=sha256_hex("id"), user_id="u-1", organisation_id="o",
                      created_at=t0, last_seen_at=t0, idle_timeout_s=60,
                      absolute_expires_at=t0 + timedelta(seconds=90))
    assert s.live(t0 + timedelta(seconds=59))
    assert not s.live(t0 + timedelta(seconds=60))  # idle
    later = s.model_copy(update={"last_seen_at": t0 + timedelta(seconds=59)})
    assert later.live(t0 + timedelta(seconds=89))
    assert not later.live(t0 + timedelta(seconds=90))  # absolute
    assert not s.model_copy(update={"revoked_at": t0}).live(t0)
