"""People sign in (issue 16): the session cookie and its flags, a new id at every sign-in,
one answer for an unknown account and a wrong password, sign-out, CSRF, the person's
facility scope, lock-out and the sign-in rate limits, audited; on SQLite and, for the
sign-in and sign-out path, on Redis."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.accounts import disable_user
from agents.identity.lockout import LockoutPolicy
from agents.identity.passwords import PasswordHasher
from agents.sign_in import SignInPolicy
from api import ApiDeps, create_app
from api.people import CSRF_COOKIE, CSRF_HEADER, SECURE_COOKIE, People
from api.principal import Role
from api.ratelimit import RateLimiter
from connectors.cache.redis_sessions import RedisSessions
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.identity import AuditAction, PersonRole, sha256_hex
from schemas.metadata import Facility
from tables.ports.identity import SessionStore
from tests.auth_helpers import authenticator, bearer, issuer
from tests.people_helpers import (
    FAST,
    ORG,
    OTHER_ORG,
    PASSWORD,
    Client,
    email_of,
    login,
    seed,
    user_id_of,
)
from tests.servers import Redis

pytestmark = pytest.mark.integration

A, A2, B = "plant-a", "plant-a2", "plant-b"  # A, A2: org-1's; B: org-2's


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


class CountingHasher(PasswordHasher):
    """Counts verifications: an unknown account must cost one too."""

    verified = 0

    def verify(self, password_hash: str | None, password: str) -> bool:
        self.verified += 1
        return super().verify(password_hash, password)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    await s.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                               for f in (A, A2, B)])
    yield s
    await s.close()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher(FAST)


def app_for(store: SqliteStore, sessions: SessionStore, hasher: PasswordHasher, *,
            clock: Clock | None = None, **people: Any) -> web.Application:
    return create_app(ApiDeps(
        timeseries=store, metadata=store, metrics=store.metrics, auth=authenticator(store),
        jwks=issuer().jwks(), rate_limiter=RateLimiter(1000, 1000),
        clock=clock or Clock(), forecasts=store,
        people=People(identity=store, sessions=sessions, hasher=hasher, **people)))


async def seeded(store: SqliteStore, hasher: PasswordHasher) -> None:
    await seed(store, hasher, facilities={ORG: (A, A2), OTHER_ORG: (B,)}, assigned=(A,))


@pytest.fixture
async def client(store: SqliteStore, hasher: CountingHasher) -> AsyncIterator[Client]:
    await seeded(store, hasher)
    async with TestClient(TestServer(app_for(store, store.sessions, hasher))) as c:
        yield c


async def test_sign_in_sets_the_cookies_and_me_says_who(client: Client,
                                                        store: SqliteStore) -> None:
    resp = await client.post("/api/auth/login", json={
        "email": "  Facility-Manager@ORG-1.example.com ", "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    cookies = resp.headers.getall("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("sems_session="))
    csrf_cookie = next(c for c in cookies if c.startswith(f"{CSRF_COOKIE}="))
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in session_cookie
    assert "Secure" not in session_cookie  # plain HTTP here
    assert "HttpOnly" not in csrf_cookie  # the dashboard reads it
    session_id = resp.cookies["sems_session"].value
    assert len(session_id) >= 43  # 32 random bytes, URL-safe base64
    body = await resp.json()
    assert body["csrf_token"] == resp.cookies[CSRF_COOKIE].value
    # Only the digest is stored: the raw id is nowhere in the file.
    assert await store.sessions.get(sha256_hex(session_id), now=datetime.now(UTC))
    raw = sqlite3.connect(store.db.path).execute("SELECT * FROM sessions").fetchall()
    assert session_id not in repr(raw)

    client.session.cookie_jar.clear()
    me = await client.get("/api/me", headers={"Cookie": f"sems_session={session_id}"})
    assert me.status == 200
    who = await me.json()
    assert (who["via"], who["role"], who["facility_ids"]) == (
        "session", "facility_manager", [A])
    assert who["user"]["email"] == "facility-manager@org-1.example.com"
    assert who["organisation"] == {"organisation_id": ORG, "name": "ORG-1"}
    assert who["csrf_token"] == body["csrf_token"]
    assert "password_hash" not in str(who)


async def test_every_sign_in_gets_a_new_session_id(client: Client) -> None:
    first = await login(client, email_of(PersonRole.VIEWER))
    second = await login(client, email_of(PersonRole.VIEWER))
    assert first.session_id != second.session_id and first.csrf != second.csrf
    # A cookie set by someone else beforehand (fixation) is not what sign-in keeps.
    fixed = "attacker-chosen-session-id-0123456789abcdef012"
    resp = await client.post("/api/auth/login", headers={"Cookie": f"sems_session={fixed}"},
                             json={"email": email_of(PersonRole.VIEWER), "password": PASSWORD})
    assert resp.status == 200 and resp.cookies["sems_session"].value != fixed


async def test_secure_cookies_use_the_host_prefix(store: SqliteStore,
                                                  hasher: CountingHasher) -> None:
    await seeded(store, hasher)
    app = app_for(store, store.sessions, hasher, secure_cookies=True)
    async with TestClient(TestServer(app)) as c:
        resp = await c.post("/api/auth/login", json={"email": email_of(PersonRole.ADMIN),
                                                     "password": PASSWORD})
        assert resp.status == 200
        cookie = next(h for h in resp.headers.getall("Set-Cookie")
                      if h.startswith(f"{SECURE_COOKIE}="))
        assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie
        session_id = resp.cookies[SECURE_COOKIE].value
        c.session.cookie_jar.clear()
        me = await c.get("/api/me", headers={"Cookie": f"{SECURE_COOKIE}={session_id}"})
        assert (await me.json())["role"] == "admin"
        plain = await c.get("/api/me", headers={"Cookie": f"sems_session={session_id}"})
        assert plain.status == 401  # only the prefixed name counts over TLS


async def test_unknown_account_and_wrong_password_answer_alike(
        client: Client, hasher: CountingHasher, store: SqliteStore) -> None:
    answers = []
    for email, password in ((email_of(PersonRole.VIEWER), "wrong password 123"),
                            ("nobody@org-1.example.com", "wrong password 123"),
                            ("not an address", "whatever")):
        before = hasher.verified
        resp = await client.post("/api/auth/login", json={"email": email,
                                                          "password": password})
        assert hasher.verified == before + 1  # argon2 ran for every one of them
        answers.append((resp.status, await resp.json()))
        assert "Set-Cookie" not in resp.headers
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 401 and answers[0][1]["error_code"] == "sign_in_failed"
    # A disabled account with its right password: the same answer.
    await disable_user(store, store.sessions, user_id_of(PersonRole.OPERATOR),
                       actor_id="test", at=datetime.now(UTC))
    resp = await client.post("/api/auth/login", json={"email": email_of(PersonRole.OPERATOR),
                                                      "password": PASSWORD})
    assert (resp.status, await resp.json()) == answers[0]
    failed = await store.audit(actions=[AuditAction.SIGN_IN_FAILED])
    assert [r.details["reason"] for r in failed] == [
        "disabled", "unknown_account", "unknown_account", "wrong_password"]
    assert all(r.client_address == "127.0.0.1" for r in failed)


@pytest.mark.parametrize("body", [
    {"email": "a@b.example.com", "password": "x", "remember_me": True},  # unknown field
    {"email": "a" * 400 + "@b.example.com", "password": "x"},  # over-long email
    {"email": "a@b.example.com", "password": "x" * 1025},  # over-long password
    {"email": "a@b.example.com"},  # no password
    {"email": 7, "password": "x"},  # not a string
])
async def test_bad_bodies_are_400(client: Client, body: dict[str, Any]) -> None:
    resp = await client.post("/api/auth/login", json=body)
    assert resp.status == 400, await resp.text()
    answer = await resp.json()
    assert answer["error_code"] == "invalid_body" and answer["details"]
    assert "x" * 50 not in str(answer)  # what was sent is not echoed


async def test_sign_out_revokes_and_needs_the_csrf_token(client: Client,
                                                         store: SqliteStore) -> None:
    s = await login(client, email_of(PersonRole.VIEWER))
    refused = await client.post("/api/auth/logout", headers=s.headers(csrf=False))
    assert refused.status == 403 and (await refused.json())["error_code"] == "csrf_failed"
    wrong = await client.post("/api/auth/logout",
                              headers={**s.headers(), CSRF_HEADER: "0" * 64})
    assert wrong.status == 403
    assert (await client.get("/api/me", headers=s.headers())).status == 200
    out = await client.post("/api/auth/logout", headers=s.headers())
    assert out.status == 200 and await out.json() == {"signed_out": True}
    assert any(h.startswith("sems_session=;") or 'sems_session=""' in h
               for h in out.headers.getall("Set-Cookie"))
    gone = await client.get("/api/me", headers=s.headers())
    assert gone.status == 401 and (await gone.json())["error_code"] == "unauthenticated"
    actions = [r.action for r in await store.audit(actor_id=user_id_of(PersonRole.VIEWER))]
    assert actions == [AuditAction.SIGN_OUT, AuditAction.SIGN_IN]


async def test_csrf_origin_must_be_this_host(client: Client) -> None:
    s = await login(client, email_of(PersonRole.ADMIN))
    host = f"{client.host}:{client.port}"
    evil = await client.post("/api/auth/logout",
                             headers={**s.headers(), "Origin": "https://evil.example"})
    assert evil.status == 403
    assert (await evil.json())["details"] == {"origin": "https://evil.example"}
    # A cross-site sign-in (login CSRF) is refused too.
    resp = await client.post("/api/auth/login", headers={"Origin": "https://evil.example"},
                             json={"email": email_of(PersonRole.ADMIN), "password": PASSWORD})
    assert resp.status == 403 and (await resp.json())["error_code"] == "csrf_failed"
    ok = await client.post("/api/auth/logout",
                           headers={**s.headers(), "Origin": f"http://{host}"})
    assert ok.status == 200
    # Reads need no token; a bearer token needs none on a POST.
    s2 = await login(client, email_of(PersonRole.ADMIN))
    assert (await client.get("/api/me", headers=s2.headers(csrf=False))).status == 200
    assert (await client.post("/api/auth/logout", headers=bearer(Role.VIEWER, [A]))).status \
        == 200


async def test_a_persons_scope_is_their_organisations(client: Client) -> None:
    """Admin and energy manager: every facility of org-1, never org-2's; the others: their
    assigned one. An organisation's admin is not a deployment's: no metrics, dead letters."""
    expected = {PersonRole.ADMIN: [A, A2], PersonRole.ENERGY_MANAGER: [A, A2],
                PersonRole.FACILITY_MANAGER: [A], PersonRole.OPERATOR: [A],
                PersonRole.VIEWER: [A]}
    for role, facilities in expected.items():
        s = await login(client, email_of(role))
        listed = await client.get("/api/facilities", headers=s.headers())
        assert [f["facility_id"] for f in (await listed.json())["facilities"]] == facilities
        for facility in (A, A2, B):
            resp = await client.get(f"/api/facilities/{facility}/current", headers=s.headers())
            assert resp.status == (200 if facility in facilities else 403), (role, facility)
    admin = await login(client, email_of(PersonRole.ADMIN))
    for path in ("/metrics", "/api/dead-letters"):
        resp = await client.get(path, headers=admin.headers())
        assert resp.status == 403 and (await resp.json())["error_code"] == "forbidden"
    other = await login(client, email_of(PersonRole.ADMIN, OTHER_ORG))
    resp = await client.get(f"/api/facilities/{A}/rollups", headers=other.headers())
    assert resp.status == 403


async def test_a_bearer_token_takes_precedence_over_the_cookie(client: Client) -> None:
    s = await login(client, email_of(PersonRole.VIEWER))
    resp = await client.get("/api/me", headers={**s.headers(), **bearer(Role.ADMIN)})
    assert (await resp.json())["via"] == "token"
    assert (await resp.json())["facility_ids"] is None


async def test_a_disabled_users_session_stops_at_once(client: Client,
                                                      store: SqliteStore) -> None:
    s = await login(client, email_of(PersonRole.OPERATOR))
    user = await store.user(user_id_of(PersonRole.OPERATOR))
    assert user is not None
    # Disabled without its sessions revoked (a failure half-way): the lookup checks.
    await store.update_user(user.model_copy(update={"status": "disabled"}))
    resp = await client.get("/api/me", headers=s.headers())
    assert resp.status == 401


async def test_idle_and_absolute_expiry(store: SqliteStore, hasher: CountingHasher) -> None:
    await seeded(store, hasher)
    clock = Clock()
    policy = SignInPolicy(idle_timeout_s=600, lifetime_s=3600)
    async with TestClient(TestServer(app_for(store, store.sessions, hasher, clock=clock,
                                             policy=policy))) as c:
        s = await login(c, email_of(PersonRole.VIEWER))
        for _ in range(6):  # active every 9 min: the idle time restarts each time
            clock.now += timedelta(minutes=9)
            assert (await c.get("/api/me", headers=s.headers())).status == 200
        clock.now += timedelta(minutes=7)  # 61 min after sign-in: past the lifetime
        assert (await c.get("/api/me", headers=s.headers())).status == 401
        s = await login(c, email_of(PersonRole.VIEWER))
        clock.now += timedelta(minutes=10, seconds=1)  # idle too long
        assert (await c.get("/api/me", headers=s.headers())).status == 401


async def test_lock_out_with_backoff_lifted_by_time_or_an_admin(
        store: SqliteStore, hasher: CountingHasher) -> None:
    await seeded(store, hasher)
    clock = Clock()
    policy = SignInPolicy(lockout=LockoutPolicy(free_failures=3, base_s=30, max_s=3600))
    email = email_of(PersonRole.VIEWER)
    async with TestClient(TestServer(app_for(store, store.sessions, hasher, clock=clock,
                                             policy=policy))) as c:
        async def attempt(password: str) -> tuple[int, dict[str, Any]]:
            resp = await c.post("/api/auth/login", json={"email": email, "password": password})
            return resp.status, await resp.json()

        assert [(await attempt("bad password"))[0] for _ in range(3)] == [401] * 3
        # Third failure: locked 30 s from it, even with the right password, unchecked.
        before = hasher.verified
        status, body = await attempt(PASSWORD)
        assert (status, body["error_code"], body["details"]) == (
            429, "sign_in_locked", {"retry_after_s": 30})
        assert hasher.verified == before
        clock.now += timedelta(seconds=31)  # lifted by time; one more failure: 60 s
        assert (await attempt("bad password"))[0] == 401
        status, body = await attempt(PASSWORD)
        assert (status, body["details"]) == (429, {"retry_after_s": 60})
        # An admin lifts it (what `sems user unlock` and the API will call).
        assert await store.clear_sign_in_failures(email)
        assert (await attempt(PASSWORD))[0] == 200
        assert await store.sign_in_failures(email) is None  # a success clears the count
        # An unknown account is locked out alike: no existence oracle.
        email = "nobody@org-1.example.com"
        assert [(await attempt("bad password"))[0] for _ in range(4)] == [401] * 3 + [429]


async def test_sign_ins_are_limited_per_account_and_per_address(
        store: SqliteStore, hasher: CountingHasher) -> None:
    await seeded(store, hasher)
    app = app_for(store, store.sessions, hasher,
                  account_limiter=RateLimiter(1 / 60, 2), address_limiter=RateLimiter(1 / 60, 4))
    async with TestClient(TestServer(app)) as c:
        async def status(email: str) -> int:
            resp = await c.post("/api/auth/login", json={"email": email, "password": "nope"})
            if resp.status == 429:
                assert (await resp.json())["error_code"] == "sign_in_rate_limited"
                assert resp.headers["Retry-After"]
            return resp.status

        viewer, admin = email_of(PersonRole.VIEWER), email_of(PersonRole.ADMIN)
        assert [await status(viewer) for _ in range(3)] == [401, 401, 429]  # per account
        assert [await status(admin) for _ in range(3)] == [401, 429, 429]  # per address
        assert (await c.get("/api/facilities", headers=bearer())).status == 200  # API as usual


async def test_sign_in_without_people_configured_is_503(store: SqliteStore) -> None:
    app = create_app(ApiDeps(timeseries=store, metadata=store, metrics=store.metrics,
                             auth=authenticator(store)))
    async with TestClient(TestServer(app)) as c:
        resp = await c.post("/api/auth/login", json={"email": "a@b.example.com",
                                                     "password": "x"})
        assert resp.status == 503 and (await resp.json())["error_code"] == "sign_in_unavailable"


async def test_sign_in_and_out_with_sessions_in_redis(
        store: SqliteStore, hasher: CountingHasher, redis_server: Redis) -> None:
    await seeded(store, hasher)
    sessions = RedisSessions(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        async with TestClient(TestServer(app_for(store, sessions, hasher))) as c:
            s = await login(c, email_of(PersonRole.ENERGY_MANAGER))
            assert await sessions.get(sha256_hex(s.session_id), now=datetime.now(UTC))
            me = await c.get("/api/me", headers=s.headers())
            assert (await me.json())["facility_ids"] == [A, A2]
            assert (await c.post("/api/auth/logout", headers=s.headers())).status == 200
            assert (await c.get("/api/me", headers=s.headers())).status == 401
            assert await sessions.sessions_of(user_id_of(PersonRole.ENERGY_MANAGER),
                                              now=datetime.now(UTC)) == []
    finally:
        await sessions.close()


async def test_redis_down_refuses_sign_in_but_tokens_work(
        store: SqliteStore, hasher: CountingHasher, own_redis: Redis) -> None:
    await seeded(store, hasher)
    sessions = RedisSessions(own_redis.url, prefix="t:")
    try:
        async with TestClient(TestServer(app_for(store, sessions, hasher))) as c:
            s = await login(c, email_of(PersonRole.VIEWER))
            own_redis.stop()
            resp = await c.post("/api/auth/login", json={"email": email_of(PersonRole.VIEWER),
                                                         "password": PASSWORD})
            assert resp.status == 503 and "Set-Cookie" not in resp.headers
            me = await c.get("/api/me", headers=s.headers())
            assert me.status == 503  # never "signed in" without the store
            assert (await c.get("/api/facilities", headers=bearer())).status == 200
    finally:
        await sessions.close()
