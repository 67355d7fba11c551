"""Authentication wiring: the local issuer or an OIDC provider's JWKS, per the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.identity.lockout import LockoutPolicy
from agents.identity.passwords import Argon2Params, PasswordHasher
from agents.sign_in import SignInPolicy
from api.auth import Authenticator
from api.people import People
from api.ratelimit import RateLimiter
from api.tokens import KeySource, LocalIssuer, RemoteJwks, StaticKeys, TokenVerifier
from streams.settings import Settings
from tables.ports.access import AccessStore
from tables.ports.identity import IdentityStore, SessionStore


@dataclass(frozen=True)
class Security:
    auth: Authenticator
    rate_limiter: RateLimiter
    """Per credential: ``ApiDeps.rate_limiter``."""
    client_rate_limiter: RateLimiter
    """Per client address, before authentication: ``ApiDeps.client_rate_limiter``."""
    jwks: dict[str, Any] | None
    """The local issuer's public keys, or None with an external identity provider."""


def hasher(settings: Settings) -> PasswordHasher:
    """argon2id with the settings' costs."""
    return PasswordHasher(Argon2Params(time_cost=settings.argon2_time_cost,
                                       memory_cost_kib=settings.argon2_memory_kib))


def people(settings: Settings, identity: IdentityStore, sessions: SessionStore) -> People:
    """Sign-in's dependencies and policies, from the settings."""
    lockout = LockoutPolicy(free_failures=settings.sign_in_lockout_after,
                            base_s=min(settings.sign_in_lockout_base_s,
                                       settings.sign_in_lockout_max_s),
                            max_s=settings.sign_in_lockout_max_s)
    policy = SignInPolicy(idle_timeout_s=settings.session_idle_timeout_s,
                          lifetime_s=settings.session_lifetime_s, lockout=lockout,
                          password_reset_ttl_s=settings.password_reset_ttl_s)
    per_account, per_address = settings.sign_in_account_per_min, settings.sign_in_address_per_min
    return People(identity=identity, sessions=sessions, hasher=hasher(settings), policy=policy,
                  secure_cookies=settings.api_secure_cookies,
                  account_limiter=RateLimiter(per_account / 60, per_account),
                  address_limiter=RateLimiter(per_address / 60, per_address))


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
