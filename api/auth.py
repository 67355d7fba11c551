"""Authentication of API calls: bearer JWTs, or a utility's API key.

``Authorization: Bearer <JWT>`` is checked by ``TokenVerifier``; a utility's systems send
``X-API-Key: sems_uk_...`` (or the key as the bearer token). Keys are looked up by id and
compared by digest; a looked-up key is remembered for ``key_cache_ttl_s`` so that a utility
polling the API costs no store query per request, which bounds how long a revoked key keeps
working."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from api import apikeys
from api.errors import ApiError
from api.principal import Principal, Role
from api.tokens import InvalidToken, KeysUnavailable, TokenVerifier
from schemas.access import ApiKeyRecord, Utility
from tables.ports.access import AccessStore

CHALLENGE = 'Bearer realm="sems"'


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message,
                    headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'})


@dataclass
class Authenticator:
    tokens: TokenVerifier
    access: AccessStore
    clock: Callable[[], datetime]
    key_cache_ttl_s: float = 10.0
    _keys: dict[str, tuple[float, ApiKeyRecord | None, Utility | None]] = field(
        default_factory=dict)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        api_key = headers.get("X-API-Key")
        if api_key is not None:
            return await self._api_key(api_key.strip())
        authorization = headers.get("Authorization")
        if authorization is None:
            raise ApiError(401, "unauthenticated",
                           "this route needs credentials: Authorization: Bearer <token>, "
                           "or X-API-Key for a utility", headers={"WWW-Authenticate": CHALLENGE})
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise unauthenticated("the Authorization header must be 'Bearer <token>'")
        if credentials.startswith(apikeys.PREFIX):
            return await self._api_key(credentials)
        try:
            return await self.tokens.verify(credentials)
        except InvalidToken as exc:
            raise unauthenticated(str(exc)) from None
        except KeysUnavailable:
            raise ApiError(503, "auth_unavailable",
                           "the identity provider's keys cannot be fetched; retry shortly"
                           ) from None

    async def _api_key(self, key: str) -> Principal:
        parsed = apikeys.parse(key)
        if parsed is None:
            raise unauthenticated("the API key is malformed")
        key_id, secret = parsed
        record, utility = await self._lookup(key_id)
        if record is None or utility is None or not apikeys.matches(record, secret):
            raise unauthenticated("the API key is not valid")
        if not record.active(self.clock()):
            raise unauthenticated("the API key has been revoked")
        return Principal(subject=f"{utility.utility_id}/{key_id}", role=Role.UTILITY,
                         facility_ids=frozenset(utility.facility_ids), via="api_key",
                         utility_id=utility.utility_id, key_id=key_id)

    async def _lookup(self, key_id: str) -> tuple[ApiKeyRecord | None, Utility | None]:
        now_s = time.monotonic()
        cached = self._keys.get(key_id)
        if cached is not None and now_s - cached[0] < self.key_cache_ttl_s:
            return cached[1], cached[2]
        record = await self.access.api_key(key_id)
        utility = None if record is None else await self.access.utility(record.utility_id)
        if len(self._keys) > 10_000:
            self._keys.clear()  # unknown ids are cached too: do not let junk ids grow it
        self._keys[key_id] = (now_s, record, utility)
        return record, utility
