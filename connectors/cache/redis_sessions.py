"""Signed-in sessions in Redis (``SessionStore``), the production profile's (issue 16).

Keys, under the prefix: ``session:<digest>``, a hash of the record with a TTL of
``min(idle timeout, absolute expiry - now)``, renewed at each lookup (so Redis forgets a
session once it has expired by its own clock too); ``user-sessions:<user id>`` (members: the
digests) and ``sessions`` (members: ``<digest>:<user id>``, so that ``expire`` can clean the
user's index of a session whose hash has gone), sorted sets scored by absolute expiry, which
"sign out everywhere" and the listings read. Members whose session has gone are dropped as
they are met, those past their absolute expiry at each ``create`` and ``revoke_all``
(``ZREMRANGEBYSCORE``), and each index lives as long as its longest session (never without a
TTL). ``user-revoked:<user id>``, a hash of the last ``revoke_all``'s time and the session it
kept: a lookup refuses any other session created before it, so "sign out everywhere" holds
even if the user's index were lost (one small key per user who used it, without TTL: it must
outlive every session it refuses).

Every check and change is one Lua script, so a lookup and a revocation cannot interleave;
the scripts name the keys they reach from an index themselves, which is fine on one Redis
(not on a cluster).

The sessions' Redis must run with ``maxmemory-policy noeviction``: an evicting policy may
drop an index or a "revoked before" mark, and then a signed-out session signs in again.
(The cache's Redis may evict; give the sessions their own instance or database when it
does.) Redis down is ``StoreUnavailable``: sign-ins answer 503, nothing falls back to signed
in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectors.epoch import dt, us
from connectors.identity_input import checked_inputs
from schemas.identity import SessionRecord
from tables.ports.identity import Conflict
from tables.ports.store import StoreUnavailable

EXPIRE_BATCH = 256
"""Index members ``expire`` examines per script: Redis runs nothing else while a script runs."""

_LIVE = """
local function live(prefix, d, now)
  local h = redis.call('HMGET', prefix .. 'session:' .. d, 's', 'i', 'a', 'r', 'u', 'c')
  if not h[1] or h[4] then return false end
  if not (now < tonumber(h[1]) + tonumber(h[2]) and now < tonumber(h[3])) then return false end
  local m = redis.call('HMGET', prefix .. 'user-revoked:' .. h[5], 't', 'k')
  return not (m[1] and tonumber(h[6]) < tonumber(m[1]) and d ~= m[2])
end
"""
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local index_ms = math.max(1, math.ceil((tonumber(ARGV[2]) - tonumber(ARGV[4])) / 1000))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3] .. ':' .. ARGV[5])
for i = 2, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[4])
  if redis.call('EXISTS', KEYS[i]) == 1 and redis.call('PTTL', KEYS[i]) < index_ms then
    redis.call('PEXPIRE', KEYS[i], string.format('%d', index_ms))
  end
end
return 1
"""
_GET = _LIVE + """
local now = tonumber(ARGV[1])
if not live(ARGV[2], ARGV[3], now) then return false end
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
if not live(ARGV[2], ARGV[3], tonumber(ARGV[1])) then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1])
return 1
"""
_REVOKE_ALL = _LIVE + """
local now, n = tonumber(ARGV[2]), 0
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
for _, d in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. 'session:' .. d
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], d)
  elseif d ~= ARGV[3] and live(ARGV[1], d, now) then
    redis.call('HSET', key, 'r', ARGV[2])
    n = n + 1
  end
end
local t = redis.call('HGET', KEYS[2], 't')
if not t or tonumber(t) < now then
  redis.call('HSET', KEYS[2], 't', ARGV[2], 'k', ARGV[3])
end
return n
"""
_EXPIRE = _LIVE + """
local prefix, now = ARGV[1], tonumber(ARGV[2])
local members = redis.call('ZRANGE', KEYS[1], ARGV[3], tonumber(ARGV[3]) + tonumber(ARGV[4]) - 1)
local forgotten, dropped = 0, 0
for _, m in ipairs(members) do
  local d, user = string.sub(m, 1, 64), string.sub(m, 66)
  local key = prefix .. 'session:' .. d
  local owner = redis.call('HGET', key, 'u')
  if not owner or not live(prefix, d, now) then
    if owner then
      redis.call('DEL', key)
      forgotten = forgotten + 1
      user = owner
    end
    redis.call('ZREM', KEYS[1], m)
    if user ~= '' then redis.call('ZREM', prefix .. 'user-sessions:' .. user, d) end
    dropped = dropped + 1
  end
end
return {forgotten, #members, dropped}
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


def _revoked_before(session: SessionRecord, mark: list[Any]) -> bool:
    """Whether the user's "revoked before" mark (``revoke_all``: a time and the session it
    kept) refuses the session."""
    at, keep = mark
    return (at is not None and us(session.created_at) < int(at)
            and session.session_sha256 != bytes(keep or b"").decode())


def _text(values: Any) -> dict[str, str]:
    if isinstance(values, dict):
        return {bytes(k).decode(): bytes(v).decode() for k, v in values.items()}
    items = [bytes(v).decode() for v in values]
    return dict(zip(items[::2], items[1::2], strict=True))


@checked_inputs
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

    def _revoked(self, user_id: str) -> str:
        return f"{self.prefix}user-revoked:{user_id}"

    async def create(self, session: SessionRecord) -> None:
        now = session.last_seen_at
        ttl_us = min(round(session.idle_timeout_s * 1_000_000),
                     us(session.absolute_expires_at) - us(now))
        created = await self._call(
            "create", self._create,
            [self._key(session.session_sha256), self._index(session.user_id),
             self._index(None)],
            [max(1, -(-ttl_us // 1000)), us(session.absolute_expires_at),
             session.session_sha256, us(now), session.user_id, *_fields(session)])
        if not created:
            raise Conflict("a session with that id exists")

    async def get(self, session_sha256: str, *, now: datetime) -> SessionRecord | None:
        flat = await self._call("get", self._get, [self._key(session_sha256)],
                                [us(now), self.prefix, session_sha256])
        return None if not flat else _record(session_sha256, _text(flat))

    async def revoke(self, session_sha256: str, *, at: datetime) -> bool:
        return bool(await self._call("revoke", self._revoke, [self._key(session_sha256)],
                                     [us(at), self.prefix, session_sha256]))

    async def revoke_all(self, user_id: str, *, at: datetime,
                         keep_sha256: str | None = None) -> int:
        return int(await self._call("revoke_all", self._revoke_all,
                                    [self._index(user_id), self._revoked(user_id)],
                                    [self.prefix, us(at), keep_sha256 or ""]))

    async def _listed(self, index: str, now: datetime) -> list[SessionRecord]:
        try:
            members = [bytes(m).decode() for m in await self._client.zrange(index, 0, -1)]
            digests = [m[:64] for m in members]  # the global index's are "<digest>:<user>"
            async with self._client.pipeline(transaction=False) as pipe:
                for digest in digests:
                    pipe.hgetall(self._key(digest))
                hashes = await pipe.execute()
            if gone := [m for m, h in zip(members, hashes, strict=True) if not h]:
                await self._client.zrem(index, *gone)
            found = [_record(d, _text(h)) for d, h in zip(digests, hashes, strict=True) if h]
            live = [s for s in found if s.live(now)]
            users = sorted({s.user_id for s in live})
            async with self._client.pipeline(transaction=False) as pipe:
                for user_id in users:
                    pipe.hmget(self._revoked(user_id), "t", "k")
                marks = dict(zip(users, await pipe.execute(), strict=True))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis list failed: {type(exc).__name__}") from exc
        return sorted((s for s in live if not _revoked_before(s, marks[s.user_id])),
                      key=lambda s: (-us(s.created_at), s.session_sha256))

    async def sessions_of(self, user_id: str, *, now: datetime) -> list[SessionRecord]:
        return await self._listed(self._index(user_id), now)

    async def all_sessions(self, *, now: datetime,
                           organisation_id: str | None = None) -> list[SessionRecord]:
        return [s for s in await self._listed(self._index(None), now)
                if organisation_id is None or s.organisation_id == organisation_id]

    async def expire(self, *, now: datetime) -> int:
        """In batches of ``EXPIRE_BATCH`` index members, one script each, so that a large
        index does not stall Redis; members that other calls add or remove meanwhile may be
        examined in the next ``expire`` instead."""
        forgotten, start = 0, 0
        while True:
            n, examined, dropped = await self._call(
                "expire", self._expire, [self._index(None)],
                [self.prefix, us(now), start, EXPIRE_BATCH])
            forgotten += int(n)
            if int(examined) < EXPIRE_BATCH:
                return forgotten
            start += int(examined) - int(dropped)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis PING failed: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self._client.aclose()
