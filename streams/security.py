"""Authentication wiring: the local issuer or an OIDC provider's JWKS, per the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.auth import Authenticator
from api.ratelimit import RateLimiter
from api.tokens import KeySource, LocalIssuer, RemoteJwks, StaticKeys, TokenVerifier
from streams.settings import Settings
from tables.ports.access import AccessStore


@dataclass(frozen=True)
class Security:
    auth: Authenticator
    rate_limiter: RateLimiter
    """Per credential: ``ApiDeps.rate_limiter``."""
    client_rate_limiter: RateLimiter
    """Per client address, before authentication: ``ApiDeps.client_rate_limiter``."""
    jwks: dict[str, Any] | None
    """The local issuer's public keys, or None with an external identity provider."""


def local_issuer(settings: Settings) -> LocalIssuer:
    return LocalIssuer.load_or_create(settings.auth_dir)


@asynccontextmanager
async def security(settings: Settings, access: AccessStore,
                   clock: Callable[[], datetime]) -> AsyncIterator[Security]:
    remote: RemoteJwks | None = None
    keys: KeySource
    jwks: dict[str, Any] | None = None
    if settings.auth_jwks_url:
        keys = remote = RemoteJwks(settings.auth_jwks_url)
        await remote.open()
    else:
        jwks = local_issuer(settings).jwks()
        keys = StaticKeys(jwks)
    verifier = TokenVerifier(keys, issuer=settings.auth_issuer, audience=settings.auth_audience,
                             leeway_s=settings.auth_leeway_s, role_claim=settings.auth_role_claim,
                             facilities_claim=settings.auth_facilities_claim)
    try:
        yield Security(auth=Authenticator(verifier, access, clock),
                       rate_limiter=RateLimiter(settings.api_rate_per_s, settings.api_rate_burst),
                       client_rate_limiter=RateLimiter(settings.api_client_rate_per_s,
                                                       settings.api_client_rate_burst),
                       jwks=jwks)
    finally:
        if remote is not None:
            await remote.close()
