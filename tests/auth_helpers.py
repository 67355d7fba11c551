"""Credentials for tests: one local issuer key per session (RSA key generation is slow)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import Authenticator
from api.principal import Role
from api.tokens import LocalIssuer, StaticKeys, TokenVerifier
from tables.ports.access import AccessStore

ISSUER = "sems-local"
AUDIENCE = "sems-api"


@functools.cache
def issuer() -> LocalIssuer:
    return LocalIssuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def token(role: Role = Role.ADMIN, facilities: Iterable[str] = (), *, subject: str = "tester",
          ttl: timedelta = timedelta(hours=1), now: datetime | None = None,
          audience: str = AUDIENCE, iss: str = ISSUER,
          signer: LocalIssuer | None = None) -> str:
    return (signer or issuer()).create_token(
        subject=subject, role=role, facility_ids=facilities, issuer=iss, audience=audience,
        now=now or datetime.now(UTC), ttl=ttl)


def bearer(role: Role = Role.ADMIN, facilities: Iterable[str] = (), **kw: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, facilities, **kw)}"}  # type: ignore[arg-type]


def authenticator(access: AccessStore) -> Authenticator:
    verifier = TokenVerifier(StaticKeys(issuer().jwks()), issuer=ISSUER, audience=AUDIENCE)
    return Authenticator(verifier, access, lambda: datetime.now(UTC))
