"""Signed-in sessions in Redis (``SessionStore``), the production profile's (issue 16).

Keys, under the prefix: ``session:<digest>``, a hash of the record with a TTL of
``min(idle timeout, absolute expiry - now)``, renewed at each lookup (so Redis forgets a
session once it has expired by its own clock too); ``user-sessions:<user id>`` and
``sessions``, sorted sets of digests scored by absolute expiry, which "sign out everywhere"
and the listings read (members whose session has gone are dropped as they are met; each index
lives as long as its longest session). Every check and change is one Lua script, so a lookup
and a revocation cannot interleave; the scripts name the session keys they reach from an
index themselves, which is fine on one Redis (not on a cluster).

Redis down is ``StoreUnavailable``: sign-ins answer 503, nothing falls back to signed in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectors.epoch import dt, us
from schemas.identity import SessionRecord
from tables.ports.identity import Conflict
from tables.ports.store import StoreUnavailable

_LIVE = """
local function live(key, now)
  local h = redis.call('HMGET', key, 's', 'i', 'a', 'r')
  if not h[1] or h[4] then return false end
  return now < tonumber(h[1]) + tonumber(h[2]) and now < tonumber(h[3])
end
"""
_CREATE = _LIVE + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local index_ms = math.ceil((tonumber(ARGV[2]) - tonumber(ARGV[4])) / 1000)
for i = 2, 3 do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
  if index_ms > 0 and redis.call('PTTL', KEYS[i]) < index_ms then
    redis.call('PEXPIRE', KEYS[i], string.format('%d', index_ms))
  end
end
return 1
"""
_GET = _LIVE + """
local now = tonumber(ARGV[1])
if not live(KEYS[1], now) then return false end
local h = redis.call('HMGET', KEYS[1], 's', 'i', 'a')
local seen = tonumber(h[1])
if now > seen then
  redis.call('HSET', KEYS[1], 's', ARGV[1])
  seen = now
end
local ttl_us = math.min(tonumber(h[2]), tonumber(h[3]) - seen)
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(1, math.ceil(ttl_us / 1000))))
return redis.call('HGETALL', KEYS[1])
"""
_REVOKE = _LIVE + """
if not live(KEYS[1], tonumber(ARGV[1])) then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1])
return 1
"""
_REVOKE_ALL = _LIVE + """
local now, n = tonumber(ARGV[2]), 0
for _, d in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. 'session:' .. d
  if d ~= ARGV[3] and live(key, now) then
    redis.call('HSET', key, 'r', ARGV[2])
    n = n + 1
  end
end
return n
"""
_EXPIRE = _LIVE + """
local now, n = tonumber(ARGV[2]), 0
for _, d in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. 'session:' .. d
  local user = redis.call('HGET', key, 'u')
  if not user then
    redis.call('ZREM', KEYS[1], d)
  elseif not live(key, now) then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], d)
    redis.call('ZREM', ARGV[1] .. 'user-sessions:' .. user, d)
    n = n + 1
  end
end
return n
"""


def _fields(session: SessionRecord) -> list[str]:
    """The hash: short names; times in epoch microseconds; the idle timeout both as given
    (``is``) and in microseconds (``i``, what the scripts compute with)."""
    fields = {"u": session.user_id, "o": session.organisation_id,
              "c": str(us(session.created_at)), "s": str(us(session.last_seen_at)),
              "i": str(round(session.idle_timeout_s * 1_000_000)),
              "is": repr(session.idle_timeout_s), "a": str(us(session.absolute_expires_at)),
              "ip": session.client_address, "ua": session.user_agent,
              "r": None if session.revoked_at is None else str(us(session.revoked_at))}
    return [x for k, v in fields.items() if v is not None for x in (k, v)]


def _record(digest: str, flat: dict[str, str]) -> SessionRecord:
    revoked = flat.get("r")
    return SessionRecord(session_sha256=digest, user_id=flat["u"], organisation_id=flat["o"],
                         created_at=dt(int(flat["c"])), last_seen_at=dt(int(flat["s"])),
                         idle_timeout_s=float(flat["is"]),
                         absolute_expires_at=dt(int(flat["a"])),
                         client_address=flat.get("ip"), user_agent=flat.get("ua"),
                         revoked_at=None if revoked is None else dt(int(revoked)))


def _text(values: Any) -> dict[str, str]:
    if isinstance(values, dict):
        return {bytes(k).decode(): bytes(v).decode() for k, v in values.items()}
    items = [bytes(v).decode() for v in values]
    return dict(zip(items[::2], items[1::2], strict=True))


class RedisSessions:
    def __init__(self, url: str, *, prefix: str = "sems:", timeout_s: float = 0.25) -> None:
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            health_check_interval=0, retry_on_timeout=False)
        self._create = self._client.register_script(_CREATE)
        self._get = self._client.register_script(_GET)
        self._revoke = self._client.register_script(_REVOKE)
        self._revoke_all = self._client.register_script(_REVOKE_ALL)
        self._expire = self._client.register_script(_EXPIRE)

    def _key(self, digest: str) -> str:
        return f"{self.prefix}session:{digest}"

    def _index(self, user_id: str | None) -> str:
        return (f"{self.prefix}sessions" if user_id is None
                else f"{self.prefix}user-sessions:{user_id}")

    async def _call(self, op: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {op} failed: {type(exc).__name__}") from exc

    async def create(self, session: SessionRecord) -> None:
        now = session.last_seen_at
        ttl_us = min(round(session.idle_timeout_s * 1_000_000),
                     us(session.absolute_expires_at) - us(now))
        created = await self._call(
            "create", self._create,
            [self._key(session.session_sha256), self._index(session.user_id),
             self._index(None)],
            [max(1, -(-ttl_us // 1000)), us(session.absolute_expires_at),
             session.session_sha256, us(now), *_fields(session)])
        if not created:
            raise Conflict("a session with that id exists")

    async def get(self, session_sha256: str, *, now: datetime) -> SessionRecord | None:
        flat = await self._call("get", self._get, [self._key(session_sha256)], [us(now)])
        return None if not flat else _record(session_sha256, _text(flat))

    async def revoke(self, session_sha256: str, *, at: datetime) -> bool:
        return bool(await self._call("revoke", self._revoke, [self._key(session_sha256)],
                                     [us(at)]))

    async def revoke_all(self, user_id: str, *, at: datetime,
                         keep_sha256: str | None = None) -> int:
        return int(await self._call("revoke_all", self._revoke_all, [self._index(user_id)],
                                    [self.prefix, us(at), keep_sha256 or ""]))

    async def _listed(self, index: str, now: datetime) -> list[SessionRecord]:
        try:
            digests = [bytes(d).decode() for d in await self._client.zrange(index, 0, -1)]
            async with self._client.pipeline(transaction=False) as pipe:
                for digest in digests:
                    pipe.hgetall(self._key(digest))
                hashes = await pipe.execute()
            if gone := [d for d, h in zip(digests, hashes, strict=True) if not h]:
                await self._client.zrem(index, *gone)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis list failed: {type(exc).__name__}") from exc
        found = [_record(d, _text(h)) for d, h in zip(digests, hashes, strict=True) if h]
        return sorted((s for s in found if s.live(now)),
                      key=lambda s: (-us(s.created_at), s.session_sha256))

    async def sessions_of(self, user_id: str, *, now: datetime) -> list[SessionRecord]:
        return await self._listed(self._index(user_id), now)

    async def all_sessions(self, *, now: datetime,
                           organisation_id: str | None = None) -> list[SessionRecord]:
        return [s for s in await self._listed(self._index(None), now)
                if organisation_id is None or s.organisation_id == organisation_id]

    async def expire(self, *, now: datetime) -> int:
        return int(await self._call("expire", self._expire, [self._index(None)],
                                    [self.prefix, us(now)]))

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis PING failed: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self._client.aclose()
