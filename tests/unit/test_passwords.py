"""The password policy and argon2id hashing (agents/identity/passwords.py)."""

from __future__ import annotations

import time

import pytest

from agents.identity.passwords import (
    MAX_LENGTH,
    Argon2Params,
    PasswordHasher,
    PasswordRejected,
    check_password,
    common_passwords,
)

pytestmark = pytest.mark.unit

FAST = Argon2Params(time_cost=1, memory_cost_kib=8, parallelism=1)


@pytest.mark.parametrize(("password", "problem"), [
    ("short-pw", "too_short"),  # 8 characters
    ("x" * 11 + "y", "repetitive"),  # 12 characters, 2 different
    ("a" * (MAX_LENGTH + 1), "too_long"),
    ("qwertyuiop123", "common"),  # listed
    ("QwertyUiop123", "common"),  # listed, other case
    ("Password2024!", "common"),  # "password" with digits and punctuation around it
    ("p@ssw0rd1234", "common"),  # "password" with the usual substitutions
    ("monkeymonkey", "common"),  # "monkey" twice
    ("alice.smith@example.com", "like_account"),  # the email
    ("Alice.Smith2024", "like_account"),  # the email's local part, with digits
    ("Alice Smith!!!", "like_account"),  # the display name
])
def test_a_password_is_refused_with_its_problem(password: str, problem: str) -> None:
    with pytest.raises(PasswordRejected) as refused:
        check_password(password, email="alice.smith@example.com", display_name="Alice Smith")
    assert refused.value.problem == problem
    assert refused.value.message == str(refused.value)


@pytest.mark.parametrize("password", [
    "correct horse battery staple",
    "Tr0ub4dor&3-but-longer",
    "ünïcödé pässwörd",  # counted in code points
    "a" * 8 + "bcd" + "e" * (MAX_LENGTH - 11),  # MAX_LENGTH exactly
])
def test_a_good_password_passes(password: str) -> None:
    check_password(password, email="alice.smith@example.com", display_name="Alice Smith")


def test_the_shipped_list_has_the_usual_suspects() -> None:
    listed = common_passwords()
    assert len(listed) == 10_000
    assert {"123456", "password", "qwerty", "iloveyou", "dragon"} <= listed
    assert all(p == p.lower() for p in listed)


def test_hash_verify_and_rehash() -> None:
    hasher = PasswordHasher(FAST)
    hashed = hasher.hash("correct horse battery staple")
    assert hashed.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert hasher.verify(hashed, "correct horse battery staple")
    assert not hasher.verify(hashed, "correct horse battery stapler")
    assert not hasher.verify("$argon2id$garbage", "x")  # malformed: no, not an exception
    assert not hasher.needs_rehash(hashed)
    stronger = PasswordHasher(Argon2Params(time_cost=2, memory_cost_kib=8, parallelism=1))
    assert stronger.needs_rehash(hashed)
    assert stronger.verify(hashed, "correct horse battery staple")  # old hashes still verify
    assert stronger.needs_rehash("not a hash")


def test_an_unknown_account_costs_a_verification_too() -> None:
    """The dummy path runs argon2 with the hasher's own parameters: with a cost high enough to
    measure, it takes at least half the time a wrong password does (it takes about the
    same; half leaves room for a noisy machine)."""
    hasher = PasswordHasher(Argon2Params(time_cost=2, memory_cost_kib=8192, parallelism=1))
    hashed = hasher.hash("correct horse battery staple")

    def best_of(n: int, fn: object) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            assert callable(fn)
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    wrong = best_of(5, lambda: hasher.verify(hashed, "wrong password here"))
    unknown = best_of(5, lambda: hasher.verify(None, "wrong password here"))
    huge = best_of(5, lambda: hasher.verify(hashed, "x" * (MAX_LENGTH + 1)))
    assert not hasher.verify(None, "correct horse battery staple")
    assert unknown > wrong / 2 and huge > wrong / 2, (wrong, unknown, huge)


def test_a_password_with_a_lone_surrogate_is_refused_never_an_encoding_error() -> None:
    broken = "correct horse \ud800 battery"  # what a JSON "\ud800" escape decodes to
    with pytest.raises(PasswordRejected) as caught:
        check_password(broken)
    assert caught.value.problem == "not_text"
    hasher = PasswordHasher(FAST)
    with pytest.raises(PasswordRejected):
        hasher.hash(broken)
    assert not hasher.verify(hasher.hash("correct horse battery"), broken)
    assert not hasher.verify(None, broken)
