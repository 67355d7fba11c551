"""JWT bearer tokens: RS256 validated against a JWKS, and the embedded default's local issuer.

PyJWT does the cryptography and the registered-claim checks (issuer, audience, expiry with a
small leeway); this module decides where the keys come from:

- ``RemoteJwks``: an OIDC provider's JWKS URL (Auth0, Keycloak, Entra ID...), fetched with
  aiohttp, cached, and refetched when a token names a key id we have not seen (key rotation),
  at most once per ``min_refresh_s`` so that junk key ids cannot make us hammer the provider.
- ``LocalIssuer``: an RSA key kept in the data directory, so that ``make run`` needs no identity
  provider. ``sems token create`` signs with it; the API serves its public half at
  ``/.well-known/jwks.json`` like any provider would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from api.principal import Principal, Role
from api.token_cache import VerifiedTokenCache, digest

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
KEY_FILE = "issuer-key.pem"


class InvalidToken(Exception):
    """The token is malformed, expired, badly signed or lacks what SEMS needs. The message is
    safe to show to the caller: it never contains the token."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched: the caller cannot be authenticated right now."""


class KeySource(Protocol):
    async def key(self, kid: str | None) -> jwt.PyJWK: ...

    def generation(self) -> int | None:
        """A number naming the key set in force, which changes whenever the set does; ``None``
        when the set is due for a refresh (``key()`` must run before a verification made
        earlier may be trusted again). ``api/token_cache.py`` keys its entries by it."""
        ...


class StaticKeys:
    """Keys known up front (the local issuer's)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = jwt.PyJWKSet.from_dict(jwks)

    def generation(self) -> int | None:
        return 0

    async def key(self, kid: str | None) -> jwt.PyJWK:
        try:
            return _pick(self._keys, kid)
        except LookupError:
            raise InvalidToken("the token's key id is not in the issuer's key set") from None


def _pick(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK:
    candidates = [k for k in keys.keys if k.key_type == "RSA" and k.public_key_use in (None, "sig")]
    if kid is None:
        if len(candidates) == 1:
            return candidates[0]
        raise InvalidToken("the token has no key id (kid) and the key set has several keys")
    for k in candidates:
        if k.key_id == kid:
            return k
    raise LookupError(kid)


class RemoteJwks:
    """An identity provider's JWKS, cached for ``ttl_s`` and refetched on an unknown key id."""

    def __init__(self, url: str, *, ttl_s: float = 600.0, min_refresh_s: float = 30.0,
                 timeout_s: float = 5.0) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._min_refresh_s = min_refresh_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._keys: jwt.PyJWKSet | None = None
        self._body: Any = None
        self._generation = 0
        self._fetched_at = -float("inf")
        self._forced_at = -float("inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def generation(self) -> int | None:
        if self._keys is None or time.monotonic() - self._fetched_at > self._ttl_s:
            return None
        return self._generation

    async def key(self, kid: str | None) -> jwt.PyJWK:
        if self._keys is None or time.monotonic() - self._fetched_at > self._ttl_s:
            await self._refresh(force=False)
        if self._keys is None:
            raise KeysUnavailable(f"no key set from {self._url}")
        try:
            return _pick(self._keys, kid)
        except LookupError:
            if await self._refresh(force=True):
                try:
                    return _pick(self._keys, kid)
                except LookupError:
                    pass
            raise InvalidToken("the token's key id is not in the issuer's key set") from None

    async def _refresh(self, *, force: bool) -> bool:
        """Fetch the key set; returns whether a fetch happened. With ``force`` (unknown key id)
        at most once per ``min_refresh_s``."""
        async with self._lock:
            now_s = time.monotonic()
            if force:
                if now_s - self._forced_at < self._min_refresh_s:
                    return False
                self._forced_at = now_s
            elif self._keys is not None and now_s - self._fetched_at <= self._ttl_s:
                return False  # another request refreshed while this one waited
            if self._session is None:
                raise KeysUnavailable("the JWKS client is not open")
            try:
                async with self._session.get(self._url) as response:
                    response.raise_for_status()
                    body = await response.json(content_type=None)
                keys = jwt.PyJWKSet.from_dict(body)
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
                self._fetched_at = time.monotonic()  # back off for min_refresh_s / ttl
                log.warning("JWKS fetch from %s failed: %s", self._url, exc)
                if self._keys is None:
                    raise KeysUnavailable(f"cannot fetch the key set from {self._url}") from None
                return False
            if body != self._body:
                self._generation += 1  # tokens verified against the old set: verify again
            self._keys, self._body, self._fetched_at = keys, body, time.monotonic()
            return True


@dataclass(frozen=True)
class TokenVerifier:
    """Validates a bearer JWT and turns its claims into a ``Principal``.

    The role and facility claims are configurable because OIDC providers differ: Auth0 requires
    custom claims to be namespaced (``https://example.com/sems_role``)."""

    keys: KeySource
    issuer: str
    audience: str
    leeway_s: float = 30.0
    role_claim: str = "sems_role"
    facilities_claim: str = "sems_facilities"
    cache: VerifiedTokenCache = field(default_factory=VerifiedTokenCache, compare=False)
    """Tokens verified before (``api/token_cache.py``): a hit costs a SHA-256 and a lookup."""

    async def verify(self, token: str) -> Principal:
        key = digest(token)
        principal = self.cache.get(key, self.keys.generation())
        if principal is not None:
            return principal
        principal, exp_s, generation = await self._verify(token)
        if generation is not None:  # None: the set went stale meanwhile; keep it uncached
            self.cache.put(key, principal, exp_s=exp_s, leeway_s=self.leeway_s,
                           generation=generation)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float, int | None]:
        """The full check: the principal, the token's ``exp`` and the key set's generation
        it was verified against."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a JWT") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"the token must be signed with {ALGORITHM}")
        key = await self.keys.key(header.get("kid"))
        generation = self.keys.generation()
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=self.audience,
                                issuer=self.issuer, leeway=self.leeway_s,
                                options={"require": ["exp", "iat", "sub", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is not for this API (audience)") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is from an unknown issuer") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise InvalidToken("the token's signature or claims are invalid") from None
        return self._principal(claims), float(claims["exp"]), generation

    def _principal(self, claims: dict[str, Any]) -> Principal:
        raw_role = claims.get(self.role_claim)
        try:
            role = Role(str(raw_role))
        except ValueError:
            raise InvalidToken(f"the token's {self.role_claim!r} claim must be one of "
                               f"{', '.join(r.value for r in Role)}") from None
        raw = claims.get(self.facilities_claim, [])
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
            raise InvalidToken(f"the token's {self.facilities_claim!r} claim must be a list of "
                               "facility ids")
        facilities = None if role is Role.ADMIN or "*" in raw else frozenset(raw)
        return Principal(subject=str(claims["sub"]), role=role, facility_ids=facilities,
                         via="token", issuer=str(claims["iss"]))


class LocalIssuer:
    """The embedded default's identity provider: one RSA key in ``<data_dir>/auth/``."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private_key = private_key
        jwk = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
        self.kid = _thumbprint(jwk)
        self._jwk = {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    @classmethod
    def load_or_create(cls, directory: Path) -> LocalIssuer:
        """The key in ``directory``, made on first use (mode 0600: it can mint admin tokens)."""
        path = directory / KEY_FILE
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            try:
                os.link(tmp, path)  # first writer wins: racing processes all load its key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA private key")
        return cls(loaded)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk]}

    def create_token(self, *, subject: str, role: Role, facility_ids: Iterable[str],
                     issuer: str, audience: str, now: datetime, ttl: timedelta,
                     role_claim: str = "sems_role",
                     facilities_claim: str = "sems_facilities") -> str:
        claims = {
            "iss": issuer, "aud": audience, "sub": subject, "jti": uuid.uuid4().hex,
            "iat": int(now.timestamp()), "nbf": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
            role_claim: role.value, facilities_claim: sorted(set(facility_ids)),
        }
        return jwt.encode(claims, self._private_key, algorithm=ALGORITHM,
                          headers={"kid": self.kid})


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a stable key id derived from the public key."""
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"),
                           sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
