"""Local accounts' passwords: the policy a new password must meet, and argon2id hashing
(argon2-cffi) with a verification that costs about the same for an unknown account.

The common-password list, ``common_passwords.txt`` beside this module, is the first 10,000
(most frequent first) of the 20,000 that Django 5.2 ships as
``django/contrib/auth/common-passwords.txt.gz`` (BSD-3-Clause; compiled by Royce Williams,
lower-cased and deduplicated). A password is refused when, lower-cased, it is on the list, or
its trivial variants are: with the digits and punctuation around it removed
(``Password2024!``), with the usual letter substitutions undone (``p@ssw0rd``), or repeating
a listed one (``qwertyqwerty``). It is read once, on first use.

Lengths are counted in code points and the password is hashed as given (UTF-8, no Unicode
normalisation): what the user typed is what they must type again.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 1024
"""Long enough for any passphrase or manager's password, short enough that hashing an
attacker's megabyte costs nothing."""

Problem = Literal["too_short", "too_long", "common", "like_account", "repetitive",
                  "not_text"]


class PasswordRejected(ValueError):
    """A new password does not meet the policy; ``message`` says why, to the user."""

    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


def _encodable(password: str) -> bool:
    """Whether the password is text UTF-8 can carry: a lone surrogate (``"\\ud800"``, which
    a JSON body's ``\\ud800`` escape decodes to) cannot be hashed, nor typed again."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_NOT_TEXT = PasswordRejected("not_text", "a password must be text: it has a character that "
                             "is not one (a lone UTF-16 surrogate)")


@functools.cache
def common_passwords() -> frozenset[str]:
    text = resources.files(__package__ or __name__).joinpath(
        "common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line)


_AROUND = string.digits + string.punctuation + " "
_UNLEET = str.maketrans({"@": "a", "4": "a", "8": "b", "3": "e", "1": "i", "!": "i",
                         "0": "o", "$": "s", "5": "s", "7": "t", "+": "t"})


def _variants(password: str) -> set[str]:
    """The forms of a password compared with the list and with the account's names."""
    lowered = password.lower()
    forms = {lowered, lowered.strip(_AROUND), lowered.translate(_UNLEET)}
    forms.add(lowered.translate(_UNLEET).strip(_AROUND))
    for form in list(forms):
        for size in range(1, len(form) // 2 + 1):  # "abcabcabc" -> "abc"
            if len(form) % size == 0 and form[:size] * (len(form) // size) == form:
                forms.add(form[:size])
                break
    forms.discard("")
    return forms


def check_password(password: str, *, email: str | None = None,
                   display_name: str | None = None) -> None:
    """Raises ``PasswordRejected`` with the first problem of a new password, if any."""
    if not _encodable(password):
        raise _NOT_TEXT
    if len(password) < MIN_LENGTH:
        raise PasswordRejected("too_short", f"a password needs at least {MIN_LENGTH} "
                               f"characters; this one has {len(password)}")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected("too_long", f"a password has at most {MAX_LENGTH} characters")
    if len(set(password)) < 4:
        raise PasswordRejected("repetitive", "a password needs at least 4 different "
                               "characters")
    forms = _variants(password)
    names: set[str] = set()
    if email:
        names |= {email.lower(), email.lower().split("@")[0]}
    if display_name:
        names |= {display_name.lower(), display_name.lower().replace(" ", "")}
    if forms & {n for n in names if n}:
        raise PasswordRejected("like_account", "a password must not be your email address "
                               "or your name")
    if forms & common_passwords():
        raise PasswordRejected("common", "this password is among the most common ones "
                               "(or a variant of one), which attackers try first; choose "
                               "another, such as a few unrelated words")


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """argon2id's costs. The defaults: 19 MiB (OWASP's minimum memory), 5 passes, 1 lane,
    for issue 16's 50-250 ms a hash. Measured on the 2-core development machine (median of
    20 hashes, a benchmark sharing it): OWASP's minimum of 2 passes took 31 ms, below the
    target; 5 passes take 81 ms (65-88 ms). Where memory is plentiful, more of it is the
    stronger choice than more passes (46 MiB and 2 passes took 174 ms). Hashes made with
    other parameters stay verifiable; ``needs_rehash`` replaces them at the next sign-in."""

    time_cost: int = 5
    memory_cost_kib: int = 19_456
    parallelism: int = 1


class PasswordHasher:
    """argon2id hashes in PHC form (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``): the
    parameters travel with each hash, so raising them leaves old hashes verifiable and
    ``needs_rehash`` says which to replace at their owner's next sign-in."""

    def __init__(self, params: Argon2Params = Argon2Params()) -> None:
        self.params = params
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost, memory_cost=params.memory_cost_kib,
            parallelism=params.parallelism, hash_len=32, salt_len=16, type=argon2.Type.ID)
        # An unknown account is verified against this, so that it takes the time a wrong
        # password does (made here, not on first use, so the first one is not slower).
        self._dummy = self._hasher.hash("not the password of any account")

    def hash(self, password: str) -> str:
        """``PasswordRejected`` (``not_text``) for a password UTF-8 cannot carry."""
        if not _encodable(password):
            raise _NOT_TEXT
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` is the one of ``password_hash``; with no hash (an unknown
        account, an OIDC-only user) a dummy one is verified, about as long, and the answer
        is no. A malformed hash is a no too, never an exception."""
        if password_hash is None or len(password) > MAX_LENGTH or not _encodable(password):
            self._verify(self._dummy, password[:MAX_LENGTH].encode("utf-8", "replace"))
            return False
        return self._verify(password_hash, password)

    def _verify(self, password_hash: str, password: str | bytes) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than these (or is malformed)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True
