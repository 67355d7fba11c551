"""Password resets through the API (issue 16): an admin or energy manager issues a one-time
token (shown once, stored as its SHA-256, short-lived), the user sets a new password with it
once; their sessions are revoked, a lock-out lifted; every step audited, each bad input a
clear 4xx."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.identity.lockout import LockoutPolicy
from agents.sign_in import SignInPolicy
from api.ratelimit import RateLimiter
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.identity import PersonRole, sha256_hex
from schemas.metadata import Facility
from tests.integration.test_api_sign_in import A2, A, B, Clock, CountingHasher, app_for, seeded
from tests.people_helpers import (
    FAST,
    OTHER_ORG,
    PASSWORD,
    Client,
    Session,
    email_of,
    login,
    user_id_of,
)

pytestmark = pytest.mark.integration

R = PersonRole
VIEWER = user_id_of(R.VIEWER)
NEW_PASSWORD = "a quite different passphrase"


@dataclass
class Env:
    client: Client
    store: SqliteStore
    clock: Clock
    path: Path


@pytest.fixture
def people() -> dict[str, Any]:
    """``People`` fields a test overrides (the policy, the limiters)."""
    return {}


@pytest.fixture
async def env(tmp_path: Path, people: dict[str, Any]) -> AsyncIterator[Env]:
    path = tmp_path / "sems.db"
    store = SqliteStore(path, metrics=Metrics())
    await store.open()
    await store.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                                   for f in (A, A2, B)])
    hasher = CountingHasher(FAST)
    await seeded(store, hasher)
    clock = Clock()
    async with TestClient(TestServer(app_for(store, store.sessions, hasher, clock=clock,
                                             **people))) as c:
        yield Env(c, store, clock, path)
    await store.close()


async def issue(client: Client, s: Session, user_id: str = VIEWER) -> tuple[int, Any]:
    resp = await client.post(f"/api/users/{user_id}/password-reset", headers=s.headers())
    return resp.status, await resp.json()


async def use(client: Client, token: str, password: str = NEW_PASSWORD) -> tuple[int, Any]:
    resp = await client.post("/api/auth/password-reset",
                             json={"token": token, "new_password": password})
    return resp.status, await resp.json()


async def test_a_reset_sets_the_password_once_and_signs_the_user_out(env: Env) -> None:
    client = env.client
    viewer = await login(client, email_of(R.VIEWER))
    admin = await login(client, email_of(R.ADMIN))
    status, issued = await issue(client, admin)
    assert status == 201, issued
    assert issued["user_id"] == VIEWER and len(issued["token"]) >= 43  # 32 random bytes
    expires = issued["expires_at"]
    assert expires == (env.clock.now + timedelta(minutes=30)).isoformat().replace(
        "+00:00", "Z")
    # Only the digest is stored, never the token.
    with sqlite3.connect(env.path) as conn:
        stored = conn.execute("SELECT token_sha256, user_id FROM password_resets").fetchall()
    assert stored == [(sha256_hex(issued["token"]), VIEWER)]

    status, done = await use(client, issued["token"])
    assert (status, done) == (200, {"password_set": True, "sessions_revoked": 1})
    assert (await client.get("/api/me", headers=viewer.headers())).status == 401
    old = await client.post("/api/auth/login", json={"email": email_of(R.VIEWER),
                                                     "password": PASSWORD})
    assert old.status == 401
    await login(client, email_of(R.VIEWER), NEW_PASSWORD)

    status, again = await use(client, issued["token"], "yet another passphrase here")
    assert (status, again["error_code"], again["details"]) == (
        400, "invalid_reset_token", {"reason": "used"})
    assert "used already" in again["message"]
    await login(client, email_of(R.VIEWER), NEW_PASSWORD)  # the second use changed nothing

    resp = await client.get("/api/audit", headers=admin.headers())
    actions = [(r["action"], r["target"]) for r in (await resp.json())["records"]]
    assert ("password_reset_issued", f"user:{VIEWER}") in actions
    assert ("password_reset", f"user:{VIEWER}") in actions
    assert ("sessions_revoked_all", f"user:{VIEWER}") in actions
    assert ("password_reset_failed", f"user:{VIEWER}") in actions
    assert issued["token"] not in str(actions)


async def test_a_weak_password_is_refused_and_the_token_stays_usable(env: Env) -> None:
    admin = await login(env.client, email_of(R.ADMIN))
    _, issued = await issue(env.client, admin)
    for weak, problem in (("short", "too_short"), ("password1234", "common"),
                          (email_of(R.VIEWER), "like_account")):
        status, answer = await use(env.client, issued["token"], weak)
        assert (status, answer["error_code"], answer["details"]) == (
            400, "weak_password", {"problem": problem}), weak
    status, _ = await use(env.client, issued["token"])
    assert status == 200


@pytest.mark.parametrize("people", [{"policy": SignInPolicy(password_reset_ttl_s=120)}])
async def test_a_token_expires_after_its_setting(env: Env) -> None:
    admin = await login(env.client, email_of(R.ADMIN))
    _, issued = await issue(env.client, admin)
    assert issued["expires_at"] == (env.clock.now + timedelta(seconds=120)).isoformat(
    ).replace("+00:00", "Z")
    env.clock.now += timedelta(seconds=120)
    status, answer = await use(env.client, issued["token"])
    assert (status, answer["details"]) == (400, {"reason": "expired"})


async def test_a_newer_token_replaces_the_older(env: Env) -> None:
    admin = await login(env.client, email_of(R.ADMIN))
    _, first = await issue(env.client, admin)
    _, second = await issue(env.client, admin)
    assert (await use(env.client, first["token"]))[1]["details"] == {"reason": "unknown"}
    assert (await use(env.client, second["token"]))[0] == 200


@pytest.mark.parametrize(("body", "code"), [
    ({"token": "x" * 43}, "invalid_body"),  # no new password
    ({"token": "not a token!", "new_password": NEW_PASSWORD}, "invalid_body"),
    ({"token": "x" * 43, "new_password": NEW_PASSWORD, "user_id": VIEWER}, "invalid_body"),
    ({"token": "x" * 43, "new_password": NEW_PASSWORD}, "invalid_reset_token"),  # unknown
])
async def test_bad_reset_requests_are_refused(env: Env, body: dict[str, Any],
                                              code: str) -> None:
    resp = await env.client.post("/api/auth/password-reset", json=body)
    answer = await resp.json()
    assert (resp.status, answer["error_code"]) == (400, code), answer
    assert set(answer) == {"error_code", "message", "details"}


async def test_who_may_issue_a_reset_for_whom(env: Env) -> None:
    client = env.client
    em = await login(client, email_of(R.ENERGY_MANAGER))
    assert (await issue(client, em))[0] == 201  # a viewer of their organisation
    status, answer = await issue(client, em, user_id_of(R.ADMIN))  # above them
    assert (status, answer["error_code"]) == (403, "role_not_grantable")
    status, answer = await issue(client, em, user_id_of(R.VIEWER, OTHER_ORG))
    assert (status, answer["error_code"]) == (404, "user_not_found")
    fm = await login(client, email_of(R.FACILITY_MANAGER))
    status, answer = await issue(client, fm)
    assert (status, answer["error_code"]) == (403, "forbidden")
    admin = await login(client, email_of(R.ADMIN))
    assert (await client.patch(f"/api/users/{VIEWER}", json={"status": "disabled"},
                               headers=admin.headers())).status == 200
    status, answer = await issue(client, admin)
    assert (status, answer["error_code"]) == (409, "user_disabled")
    csrf_less = await client.post(f"/api/users/{VIEWER}/password-reset",
                                  headers=admin.headers(csrf=False))
    assert csrf_less.status == 403


async def test_a_disabled_users_token_sets_nothing(env: Env) -> None:
    admin = await login(env.client, email_of(R.ADMIN))
    _, issued = await issue(env.client, admin)
    await env.client.patch(f"/api/users/{VIEWER}", json={"status": "disabled"},
                           headers=admin.headers())
    status, answer = await use(env.client, issued["token"])
    assert (status, answer["details"]) == (400, {"reason": "disabled"})


@pytest.mark.parametrize("people", [{"policy": SignInPolicy(
    lockout=LockoutPolicy(free_failures=2, base_s=600, max_s=3600))}])
async def test_a_reset_lifts_a_lock_out(env: Env) -> None:
    for _ in range(3):
        await env.client.post("/api/auth/login", json={"email": email_of(R.VIEWER),
                                                       "password": "wrong password!"})
    locked = await env.client.post("/api/auth/login", json={"email": email_of(R.VIEWER),
                                                            "password": PASSWORD})
    assert (await locked.json())["error_code"] == "sign_in_locked"
    admin = await login(env.client, email_of(R.ADMIN))
    _, issued = await issue(env.client, admin)
    assert (await use(env.client, issued["token"]))[0] == 200
    await login(env.client, email_of(R.VIEWER), NEW_PASSWORD)


@pytest.mark.parametrize("people", [{"address_limiter": RateLimiter(1 / 60, 3)}])
async def test_resets_are_limited_per_address_with_the_sign_ins(env: Env) -> None:
    statuses = [(await use(env.client, "x" * 43))[0] for _ in range(3)]
    assert statuses == [400, 400, 400]
    status, answer = await use(env.client, "x" * 43)
    assert (status, answer["error_code"]) == (429, "sign_in_rate_limited")
    resp = await env.client.post("/api/auth/login", json={"email": email_of(R.VIEWER),
                                                          "password": PASSWORD})
    assert resp.status == 429  # one budget for every credential attempt of an address
