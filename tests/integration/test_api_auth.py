"""Every route with every kind of caller: authentication, roles, facility scope, rate limits,
and the token checks an OIDC-compatible API must make."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from agents.dr.baseline_result import BaselineResult
from agents.dr_baseline_source import BaselineSource, MethodSetting
from agents.identity.passwords import PasswordHasher
from api import ApiDeps, apikeys, create_app
from api.app import ENDPOINTS
from api.auth import Authenticator
from api.dr_deps import DrApi
from api.people import People
from api.principal import Role
from api.ratelimit import RateLimiter
from api.signatures import sign
from api.tokens import LocalIssuer, RemoteJwks, StaticKeys, TokenVerifier
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.access import Utility
from schemas.dr import DrEvent, webhook_event_uuid
from schemas.identity import PasswordReset, PersonRole, sha256_hex
from schemas.metadata import Facility, Meter, MeterType
from tests.auth_helpers import AUDIENCE, ISSUER, authenticator, bearer, issuer, token
from tests.people_helpers import (
    FAST,
    ORG,
    OTHER_ORG,
    PASSWORD,
    email_of,
    login,
    seed,
    user_id_of,
)

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]

A, B = "plant-a", "plant-b"
ALL = frozenset(Role)
ADMIN_ONLY = frozenset({Role.ADMIN})
NOBODY: frozenset[Role] = frozenset()
PUBLIC = None

# The access policy, written out by hand: a new route fails test_the_policy_covers_every_route
# until it is added here with who may call it.
POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/.well-known/jwks.json"): PUBLIC,
    ("GET", "/metrics"): ADMIN_ONLY,
    ("GET", "/api/dead-letters"): ADMIN_ONLY,
    ("GET", "/api/facilities"): ALL,
    ("GET", "/api/facilities/{facility_id}/current"): ALL,
    ("GET", "/api/facilities/{facility_id}/rollups"): ALL,
    ("GET", "/api/facilities/{facility_id}/forecast"): ALL,
    # Public at the token layer: authenticated by the utility's HMAC signature instead.
    ("POST", "/webhooks/utility/dr-notification"): PUBLIC,
    ("POST", "/api/dr-events"): frozenset({Role.UTILITY, Role.ADMIN}),
    ("GET", "/api/dr-events/{dr_event_id}"): ALL,
    ("GET", "/api/facilities/{facility_id}/dr-events"): ALL,
    ("POST", "/api/auth/login"): PUBLIC,
    ("POST", "/api/auth/logout"): ALL,
    ("GET", "/api/me"): ALL,
    # Within a signed-in person's organisation: no token or key has one.
    ("GET", "/api/users"): NOBODY,
    ("POST", "/api/users"): NOBODY,
    ("PATCH", "/api/users/{user_id}"): NOBODY,
    ("PUT", "/api/users/{user_id}/facilities"): NOBODY,
    ("GET", "/api/sessions"): NOBODY,
    ("DELETE", "/api/sessions"): NOBODY,
    ("DELETE", "/api/sessions/{session_id}"): NOBODY,
    ("GET", "/api/audit"): NOBODY,
    ("POST", "/api/users/{user_id}/password-reset"): NOBODY,
    # Public: the one-time token in the body is the credential.
    ("POST", "/api/auth/password-reset"): PUBLIC,
}
OK_STATUS = {("POST", "/api/dr-events"): 201, ("POST", "/api/users"): 201,
             ("POST", "/api/users/{user_id}/password-reset"): 201}
EVERY_PERSON = frozenset(PersonRole)
USER_MANAGERS = frozenset({PersonRole.ADMIN, PersonRole.ENERGY_MANAGER})
# The same routes for signed-in people (issue 16), by their role in org-1, which owns plant-a
# (assigned to the facility-scoped roles) and plant-a3 (assigned to none of them); plant-b
# is org-2's. None: public. Routes that span every facility (metrics, dead letters) are no
# organisation's admin's.
PERSON_POLICY: dict[tuple[str, str], frozenset[PersonRole] | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/.well-known/jwks.json"): PUBLIC,
    ("GET", "/metrics"): frozenset(),
    ("GET", "/api/dead-letters"): frozenset(),
    ("GET", "/api/facilities"): EVERY_PERSON,
    ("GET", "/api/facilities/{facility_id}/current"): EVERY_PERSON,
    ("GET", "/api/facilities/{facility_id}/rollups"): EVERY_PERSON,
    ("GET", "/api/facilities/{facility_id}/forecast"): EVERY_PERSON,
    ("POST", "/webhooks/utility/dr-notification"): PUBLIC,
    ("POST", "/api/dr-events"): frozenset({PersonRole.ADMIN}),
    ("GET", "/api/dr-events/{dr_event_id}"): EVERY_PERSON,
    ("GET", "/api/facilities/{facility_id}/dr-events"): EVERY_PERSON,
    ("POST", "/api/auth/login"): PUBLIC,
    ("POST", "/api/auth/logout"): EVERY_PERSON,
    ("GET", "/api/me"): EVERY_PERSON,
    ("GET", "/api/users"): USER_MANAGERS,
    ("POST", "/api/users"): USER_MANAGERS,
    ("PATCH", "/api/users/{user_id}"): USER_MANAGERS,
    ("PUT", "/api/users/{user_id}/facilities"): USER_MANAGERS,
    ("GET", "/api/sessions"): EVERY_PERSON,
    ("DELETE", "/api/sessions"): EVERY_PERSON,
    ("DELETE", "/api/sessions/{session_id}"): EVERY_PERSON,  # its own
    ("GET", "/api/audit"): frozenset({PersonRole.ADMIN}),
    ("POST", "/api/users/{user_id}/password-reset"): USER_MANAGERS,
    ("POST", "/api/auth/password-reset"): PUBLIC,
}
ORG_WIDE = frozenset({PersonRole.ADMIN, PersonRole.ENERGY_MANAGER})
A3 = "plant-a3"
EVENT_ID = webhook_event_uuid("gridco", "E-0", A)
HASHER = PasswordHasher(FAST)
RESET_TOKEN = "matrix-reset-token-0123456789abcdefghijklmnopq"
"""A password reset of org-2's viewer, issued in each test's store: the public reset route's
well-formed call."""


def request_kwargs(method: str, path: str) -> dict[str, Any]:
    """What a well-formed call of each route sends besides its credentials: a signed
    notification for the webhook, an event for POST /api/dr-events."""
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0,
                                                              microsecond=0)
    window = {"event_start": start.isoformat(),
              "event_end": (start + timedelta(hours=1)).isoformat()}
    if path == "/webhooks/utility/dr-notification":
        body = orjson.dumps({"event_id": "E-1", "facility_ids": [A],
                             "target_reduction_percentage": 10, **window})
        stamp = int(datetime.now(UTC).timestamp())
        return {"data": body, "headers": {
            "Content-Type": "application/json", "X-SEMS-Utility": "gridco",
            "X-SEMS-Timestamp": str(stamp), "X-SEMS-Signature": sign("whsec", stamp, body)}}
    if method == "POST" and path == "/api/dr-events":
        return {"json": {"facility_id": A, "target_reduction_kw": 10, **window}}
    if path == "/api/auth/password-reset":
        return {"json": {"token": RESET_TOKEN, "new_password": "a long unusual passphrase"}}
    if path == "/api/auth/login":
        return {"json": {"email": email_of(PersonRole.VIEWER), "password": PASSWORD}}
    if (method, path) == ("POST", "/api/users"):
        return {"json": {"email": f"new-{uuid.uuid4().hex[:8]}@org-1.example.com",
                         "display_name": "New", "role": "viewer", "facility_ids": [A]}}
    if method == "PATCH":
        return {"json": {"display_name": "Renamed"}}
    if method == "PUT":
        return {"json": {"facility_ids": [A]}}
    return {}


class FixedBaseline(BaselineSource):
    """A flat 100 kW baseline, whatever the history (the routes' policy is under test)."""

    async def baseline(self, facility: Facility, *, event_start: datetime,
                       event_end: datetime, now: datetime,
                       method: MethodSetting | None = None) -> BaselineResult:
        return BaselineResult(method="meter_before", interval_s=3600,
                              interval_starts=(event_start,), baseline_kw=(100.0,),
                              unadjusted_kw=(100.0,))


async def _submitted(_: DrEvent) -> None:
    pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    await s.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                               for f in (A, B, A3)])
    await s.upsert_meters([Meter(meter_id=f"{f}-main", facility_id=f, meter_type=MeterType.MAIN)
                           for f in (A, B, A3)])
    await seed(s, HASHER, facilities={ORG: (A, A3), OTHER_ORG: (B,)}, assigned=(A,))
    now = datetime.now(UTC)
    await s.add_password_reset(PasswordReset(
        token_sha256=sha256_hex(RESET_TOKEN), user_id=user_id_of(PersonRole.VIEWER, OTHER_ORG),
        created_at=now, expires_at=now + timedelta(hours=1), created_by="test"))
    await s.upsert_utility(Utility(utility_id="gridco", name="GridCo", facility_ids=(A,),
                                   webhook_secret=SecretStr("whsec")))
    await s.insert_dr_event(DrEvent(id=EVENT_ID, event_id="E-0", utility_id="gridco",
                                    facility_id=A, source="webhook", event_start=now,
                                    event_end=now + timedelta(hours=1), created_at=now,
                                    updated_at=now))
    yield s
    await s.close()


def app_for(store: SqliteStore, *, auth: Authenticator | None = None,
            limiter: RateLimiter | None = None) -> web.Application:
    return create_app(ApiDeps(timeseries=store, metadata=store, metrics=store.metrics,
                              auth=auth or authenticator(store), jwks=issuer().jwks(),
                              rate_limiter=limiter or RateLimiter(1000, 1000), forecasts=store,
                              dr=DrApi(store=store, access=store,
                                       baselines=FixedBaseline(store, store),
                                       submit=_submitted),
                              people=People(identity=store, sessions=store.sessions,
                                            hasher=HASHER)))


@pytest.fixture
async def client(store: SqliteStore) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app_for(store))) as c:
        yield c


def concrete(path: str, facility: str, session_digest: str = "0" * 64) -> str:
    return (path.replace("{facility_id}", facility).replace("{dr_event_id}", EVENT_ID)
            .replace("{user_id}", user_id_of(PersonRole.VIEWER))
            .replace("{session_id}", session_digest))


async def test_the_policy_covers_every_route(client: Client) -> None:
    endpoints: dict[tuple[str, str], object] = client.app[ENDPOINTS]
    declared = set(endpoints)
    assert declared == set(POLICY), "declare who may call each route in POLICY"
    registered = {(r.method, r.resource.canonical) for r in client.app.router.routes()
                  if r.resource is not None}
    assert registered == declared  # nothing reaches the router without a declaration


@pytest.mark.parametrize("route", sorted(POLICY), ids=lambda r: f"{r[0]} {r[1]}")
@pytest.mark.parametrize("role", list(Role))
async def test_every_route_with_every_role(client: Client, route: tuple[str, str],
                                           role: Role) -> None:
    method, path = route
    allowed = POLICY[route]
    # A token scoped to plant-a, asking for plant-a: only the role decides.
    kwargs = request_kwargs(method, path)
    headers = {**kwargs.pop("headers", {}), **bearer(role, [A])}
    resp = await client.request(method, concrete(path, A), headers=headers, **kwargs)
    body = await resp.read()
    if allowed is None or role in allowed:
        assert resp.status == OK_STATUS.get(route, 200), body
    else:
        assert resp.status == 403, body
        assert (await resp.json())["error_code"] == "forbidden"
    if "{facility_id}" in path and (allowed is None or role in allowed):
        # The same token asking for plant-b: refused before anything about plant-b is read,
        # and the same for a facility that does not exist (no existence oracle).
        for other, admin_status in ((B, 200), ("no-such-plant", 404)):
            resp = await client.request(method, concrete(path, other),
                                        headers=bearer(role, [A]), **request_kwargs(method, path))
            if role is Role.ADMIN:  # sees every facility
                assert resp.status == admin_status, await resp.text()
            else:
                assert resp.status == 403, await resp.text()
                assert (await resp.json())["details"] == {"facility_id": other}


@pytest.mark.parametrize("route", sorted(POLICY), ids=lambda r: f"{r[0]} {r[1]}")
async def test_every_route_without_credentials(client: Client, route: tuple[str, str]) -> None:
    method, path = route
    resp = await client.request(method, concrete(path, A), **request_kwargs(method, path))
    if POLICY[route] is None:
        assert resp.status == 200
        return
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="sems"')
    assert (await resp.json())["error_code"] == "unauthenticated"


def test_the_person_policy_covers_every_route() -> None:
    assert set(PERSON_POLICY) == set(POLICY)


@pytest.mark.parametrize("route", sorted(PERSON_POLICY), ids=lambda r: f"{r[0]} {r[1]}")
@pytest.mark.parametrize("role", list(PersonRole))
async def test_every_route_with_every_person_role(client: Client, route: tuple[str, str],
                                                  role: PersonRole) -> None:
    """Each route signed in as each role of org-1, with the session cookie and its CSRF
    token; then the facility scope: plant-a (assigned) and plant-a3 (org-1's, unassigned)
    and plant-b (org-2's)."""
    method, path = route
    allowed = PERSON_POLICY[route]
    session = await login(client, email_of(role))
    kwargs = request_kwargs(method, path)
    headers = {**kwargs.pop("headers", {}), **session.headers()}
    resp = await client.request(method, concrete(path, A, sha256_hex(session.session_id)),
                                headers=headers, **kwargs)
    body = await resp.read()
    if allowed is None or role in allowed:
        assert resp.status == OK_STATUS.get(route, 200), body
    else:
        assert resp.status == 403, body
        assert (await resp.json())["error_code"] == "forbidden"
    if "{facility_id}" in path and (allowed is None or role in allowed):
        for other in (A3, B, "no-such-plant"):
            kwargs = request_kwargs(method, path)
            resp = await client.request(method, concrete(path, other),
                                        headers={**kwargs.pop("headers", {}),
                                                 **session.headers()}, **kwargs)
            if other == A3 and role in ORG_WIDE:  # every facility of their organisation
                assert resp.status == 200, await resp.text()
            else:  # another organisation's is refused like a made-up one
                assert resp.status == 403, await resp.text()
                assert (await resp.json())["details"] == {"facility_id": other}


async def test_lists_are_filtered_to_the_callers_facilities(client: Client) -> None:
    async def listed(headers: dict[str, str]) -> list[str]:
        resp = await client.get("/api/facilities", headers=headers)
        return [f["facility_id"] for f in (await resp.json())["facilities"]]

    assert await listed(bearer(Role.VIEWER, [B])) == [B]
    assert await listed(bearer(Role.FACILITY_MANAGER, [A, B])) == [A, B]
    assert await listed(bearer(Role.VIEWER, ["*"])) == [A, A3, B]
    assert await listed(bearer(Role.ADMIN)) == [A, A3, B]
    assert await listed(bearer(Role.VIEWER, [])) == []


def other_signer() -> LocalIssuer:
    return LocalIssuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


NOW = datetime.now(UTC)
REJECTED: dict[str, Callable[[], str]] = {
    # Issued 2 h ago for 1 h: expired an hour ago, far beyond the 30 s leeway.
    "expired": lambda: token(now=NOW - timedelta(hours=2)),
    "another audience": lambda: token(audience="someone-else"),
    "another issuer": lambda: token(iss="https://evil.example/"),
    "another key": lambda: token(signer=other_signer()),
    "unsigned (alg none)": lambda: jwt.encode(
        {"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": NOW + timedelta(hours=1),
         "iat": NOW, "sems_role": "admin"}, None, algorithm="none"),  # type: ignore[arg-type]
    # HS256 signed with the public key as the secret: the classic algorithm-confusion attack.
    "HS256 with the public key": lambda: jwt.encode(
        {"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": NOW + timedelta(hours=1),
         "iat": NOW, "sems_role": "admin"}, str(issuer().jwks()["keys"][0]["n"]),
        algorithm="HS256"),
    "no role": lambda: jwt.encode(
        {"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": NOW + timedelta(hours=1),
         "iat": NOW}, issuer()._private_key, algorithm="RS256",
        headers={"kid": issuer().kid}),
    "not a JWT": lambda: "hello",
}


@pytest.mark.parametrize("case", sorted(REJECTED))
async def test_tokens_that_must_be_refused(client: Client, case: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    bad = REJECTED[case]()
    with caplog.at_level(logging.DEBUG):
        resp = await client.get("/api/facilities", headers={"Authorization": f"Bearer {bad}"})
    body = await resp.json()
    assert resp.status == 401, body
    assert body["error_code"] == "unauthenticated" and body["message"]
    assert bad not in resp.headers.get("WWW-Authenticate", "")
    assert bad not in str(body) and bad not in caplog.text  # never echoed, never logged


async def test_clock_skew_within_the_leeway_is_tolerated(client: Client) -> None:
    # Expired 10 s ago: inside the default 30 s leeway for clocks that disagree.
    late = token(now=datetime.now(UTC) - timedelta(hours=1, seconds=10))
    resp = await client.get("/api/facilities", headers={"Authorization": f"Bearer {late}"})
    assert resp.status == 200


async def test_other_schemes_are_refused(client: Client) -> None:
    resp = await client.get("/api/facilities", headers={"Authorization": "Basic dTpw"})
    assert resp.status == 401
    assert "Bearer" in (await resp.json())["message"]


async def test_utility_api_keys(store: SqliteStore) -> None:
    """Keys are looked up by id, checked by digest, scoped to the utility's enrolled
    facilities, and refused once revoked."""
    issued = apikeys.issue("gridco", now=NOW)
    await store.add_api_key(issued.record)
    verifier = TokenVerifier(StaticKeys(issuer().jwks()), issuer=ISSUER, audience=AUDIENCE)
    auth = Authenticator(verifier, store, lambda: datetime.now(UTC), key_cache_ttl_s=0)
    async with TestClient(TestServer(app_for(store, auth=auth))) as c:
        resp = await c.get("/api/facilities", headers={"X-API-Key": issued.key})
        assert [f["facility_id"] for f in (await resp.json())["facilities"]] == [A]
        resp = await c.get(f"/api/facilities/{A}/current",
                           headers={"Authorization": f"Bearer {issued.key}"})
        assert resp.status == 200
        resp = await c.get(f"/api/facilities/{B}/current", headers={"X-API-Key": issued.key})
        assert resp.status == 403
        resp = await c.get("/api/dead-letters", headers={"X-API-Key": issued.key})
        assert resp.status == 403  # a utility is not an admin

        wrong_secret = issued.key[:-4] + ("AAAA" if not issued.key.endswith("AAAA") else "BBBB")
        for bad in (wrong_secret, "sems_uk_0123456789abcdef_" + "x" * 43, "nonsense"):
            resp = await c.get("/api/facilities", headers={"X-API-Key": bad})
            assert resp.status == 401, bad

        assert await store.revoke_api_key(issued.record.key_id, at=datetime.now(UTC))
        resp = await c.get("/api/facilities", headers={"X-API-Key": issued.key})
        assert resp.status == 401
        assert "revoked" in (await resp.json())["message"]


async def test_rate_limit_per_caller(store: SqliteStore) -> None:
    limiter = RateLimiter(rate_per_s=0.5, burst=3)
    async with TestClient(TestServer(app_for(store, limiter=limiter))) as c:
        alice = bearer(Role.VIEWER, [A], subject="alice")
        statuses = [(await c.get("/api/facilities", headers=alice)).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        resp = await c.get("/api/facilities", headers=alice)
        assert resp.status == 429
        # One token every 2 s; the bucket is empty: the next is due in (1 - ~0) / 0.5 s.
        assert resp.headers["Retry-After"] == "2"
        assert (await resp.json())["error_code"] == "rate_limited"
        bob = bearer(Role.VIEWER, [A], subject="bob")
        assert (await c.get("/api/facilities", headers=bob)).status == 200  # his own budget
        assert (await c.get("/healthz")).status == 200  # public routes are not limited
        limited = store.metrics.registry.get_sample_value(
            "sems_api_rate_limited_total", {"credential": "token"})
        assert limited == 1


async def test_rate_limit_per_utility_on_the_webhook(store: SqliteStore) -> None:
    """The webhook is limited per utility once its signature holds: a flood of forged calls
    in a utility's name does not spend that utility's budget."""
    limiter = RateLimiter(rate_per_s=0.5, burst=2)
    path = "/webhooks/utility/dr-notification"
    async with TestClient(TestServer(app_for(store, limiter=limiter))) as c:
        forged = request_kwargs("POST", path)
        forged["headers"] = {**forged["headers"], "X-SEMS-Signature": "v1=" + "0" * 64}
        assert [(await c.post(path, **forged)).status for _ in range(5)] == [401] * 5
        statuses = [(await c.post(path, **request_kwargs("POST", path))).status
                    for _ in range(3)]
        assert statuses == [200, 200, 429]  # the second is a replay, still a call
        limited = store.metrics.registry.get_sample_value(
            "sems_api_rate_limited_total", {"credential": "webhook"})
        assert limited == 1


async def test_the_local_issuers_keys_are_published(client: Client) -> None:
    resp = await client.get("/.well-known/jwks.json")
    keys = (await resp.json())["keys"]
    assert [k["kid"] for k in keys] == [issuer().kid]
    assert {"kty", "n", "e", "use", "alg"} <= set(keys[0]) and "d" not in keys[0]  # public only


async def test_an_oidc_providers_jwks_with_key_rotation(store: SqliteStore) -> None:
    """Tokens from an external provider: its JWKS is fetched over HTTP, refetched when a token
    names a new key id (rotation), and not hammered by junk key ids."""
    old, new = issuer(), other_signer()
    served = {"keys": old.jwks()["keys"]}
    hits = 0

    async def jwks(_: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response(served)

    provider = web.Application()
    provider.router.add_get("/.well-known/jwks.json", jwks)
    async with TestServer(provider) as idp:
        remote = RemoteJwks(str(idp.make_url("/.well-known/jwks.json")), min_refresh_s=60)
        await remote.open()
        try:
            verifier = TokenVerifier(remote, issuer=ISSUER, audience=AUDIENCE)
            auth = Authenticator(verifier, store, lambda: datetime.now(UTC))
            async with TestClient(TestServer(app_for(store, auth=auth))) as c:
                ok = await c.get("/api/facilities", headers=bearer())
                assert ok.status == 200 and hits == 1
                served = {"keys": [*old.jwks()["keys"], *new.jwks()["keys"]]}  # rotation
                rotated = await c.get("/api/facilities", headers=bearer(signer=new))
                assert rotated.status == 200 and hits == 2
                for _ in range(5):  # unknown kids: one refetch per min_refresh_s at most
                    junk = await c.get("/api/facilities", headers=bearer(signer=other_signer()))
                    assert junk.status == 401
                assert hits == 2  # the last fetch was less than 60 s ago
        finally:
            await remote.close()


async def test_an_unreachable_provider_is_a_503_not_a_401(store: SqliteStore) -> None:
    from tests.servers import free_port

    remote = RemoteJwks(f"http://127.0.0.1:{free_port()}/jwks.json", timeout_s=1)
    await remote.open()
    try:
        verifier = TokenVerifier(remote, issuer=ISSUER, audience=AUDIENCE)
        auth = Authenticator(verifier, store, lambda: datetime.now(UTC))
        async with TestClient(TestServer(app_for(store, auth=auth))) as c:
            resp = await c.get("/api/facilities", headers=bearer())
            assert resp.status == 503
            assert (await resp.json())["error_code"] == "auth_unavailable"
    finally:
        await remote.close()
