"""Bearer tokens already verified, so that a dashboard polling with the same token pays for
the signature and the claims once, not on every request.

An entry is keyed by the SHA-256 of the token (the cache holds no token) and holds the
``Principal`` it became. It is used only while all of these hold:

- the token is still within its ``exp`` (plus the verifier's leeway, as PyJWT judges it) and
  the entry is younger than ``ttl_s``;
- the key set it was verified against is still the one in force: the key source's
  ``generation()`` is the same number. A key set that changes (a rotation at the identity
  provider, a key withdrawn) or is due for a refresh gives another number or ``None``, and the
  token is verified again from scratch, so a withdrawn key stops its tokens as soon as the
  uncached path would.

Only successes are kept: a refused token is checked in full every time (and its address pays
for it, ``api/app.py``). The size is bounded: beyond ``max_entries`` the oldest entry goes.
SEMS has no token revocation list (a local token expires, ``streams/admin_cli.py``); the API
keys' revocation is ``api/auth.py``'s and never passes through here."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from api.principal import Principal


@dataclass(frozen=True, slots=True)
class Verified:
    principal: Principal
    valid_until_s: float
    """Unix seconds: ``min(exp + leeway, verified at + ttl_s)``."""
    generation: int
    """The key set's ``generation()`` when the token was verified."""


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass
class VerifiedTokenCache:
    max_entries: int = 10_000
    ttl_s: float = 300.0
    clock: Callable[[], float] = time.time
    """Wall-clock unix seconds, like the ``exp`` PyJWT checks."""
    _entries: dict[bytes, Verified] = field(default_factory=dict)

    def get(self, key: bytes, generation: int | None) -> Principal | None:
        """The principal of a token verified before, or ``None``: never seen, expired, or
        verified against another key set (or one due for a refresh: ``generation`` None)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if generation is None or entry.generation != generation \
                or self.clock() >= entry.valid_until_s:
            del self._entries[key]
            return None
        return entry.principal

    def put(self, key: bytes, principal: Principal, *, exp_s: float, leeway_s: float,
            generation: int) -> None:
        now_s = self.clock()
        valid_until_s = min(exp_s + leeway_s, now_s + self.ttl_s)
        if valid_until_s <= now_s:
            return
        self._entries.pop(key, None)
        self._entries[key] = Verified(principal, valid_until_s, generation)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest verified

    def __len__(self) -> int:
        return len(self._entries)
