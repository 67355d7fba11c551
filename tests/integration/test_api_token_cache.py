"""Verified tokens are remembered (``api/token_cache.py``) without weakening what a token
check guarantees: a remembered token stops at its expiry, a key withdrawn at the identity
provider stops its tokens at the next key-set refresh, an altered token is never taken for
the one remembered, and each token keeps its own scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from api import ApiDeps, create_app
from api.auth import Authenticator
from api.principal import Role
from api.tokens import LocalIssuer, RemoteJwks, StaticKeys, TokenVerifier
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.metadata import Facility
from tests.auth_helpers import AUDIENCE, ISSUER, bearer, issuer, token
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration

A, B = "plant-a", "plant-b"
FACILITIES = [Facility(facility_id=f, name=f, contract_demand_kw=100) for f in (A, B)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """Two facilities, nothing else: who may see which is what is tested."""
    s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    try:
        await s.upsert_facilities(FACILITIES)
        yield s
    finally:
        await s.close()


def app_for(store: SqliteStore, verifier: TokenVerifier) -> web.Application:
    return create_app(ApiDeps(timeseries=store, metadata=store, metrics=store.metrics,
                              auth=Authenticator(verifier, store, lambda: datetime.now(UTC))))


async def test_a_remembered_token_stops_at_its_expiry(store: SqliteStore) -> None:
    verifier = TokenVerifier(StaticKeys(issuer().jwks()), issuer=ISSUER, audience=AUDIENCE,
                             leeway_s=0)
    short = bearer(ttl=timedelta(seconds=2))
    async with TestClient(TestServer(app_for(store, verifier))) as c:
        assert (await c.get("/api/facilities", headers=short)).status == 200
        assert len(verifier.cache) == 1  # remembered

        async def refused() -> bool:
            resp = await c.get("/api/facilities", headers=short)
            if resp.status == 200:
                return False
            body = await resp.json()
            assert (resp.status, body["error_code"]) == (401, "unauthenticated"), body
            assert "expired" in body["message"]
            return True

        await eventually(refused, timeout_s=10, what="the token's expiry")


async def test_a_key_withdrawn_at_the_provider_stops_its_remembered_tokens(
        store: SqliteStore) -> None:
    kept = issuer()
    withdrawn = LocalIssuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    served = {"keys": [*kept.jwks()["keys"], *withdrawn.jwks()["keys"]]}

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(served)

    provider = web.Application()
    provider.router.add_get("/jwks.json", jwks)
    async with TestServer(provider) as idp:
        # The key set is fetched again 0.5 s after each fetch; an unknown kid at most once a
        # second.
        remote = RemoteJwks(str(idp.make_url("/jwks.json")), ttl_s=0.5, min_refresh_s=1)
        await remote.open()
        try:
            verifier = TokenVerifier(remote, issuer=ISSUER, audience=AUDIENCE)
            doomed, fine = bearer(signer=withdrawn), bearer(signer=kept)
            async with TestClient(TestServer(app_for(store, verifier))) as c:
                assert (await c.get("/api/facilities", headers=doomed)).status == 200
                assert (await c.get("/api/facilities", headers=fine)).status == 200
                assert len(verifier.cache) == 2
                served = kept.jwks()  # the provider withdraws a key

                async def refused() -> bool:
                    return (await c.get("/api/facilities", headers=doomed)).status == 401

                await eventually(refused, timeout_s=10, what="the withdrawn key's token "
                                 "to be refused")
                assert (await c.get("/api/facilities", headers=fine)).status == 200
        finally:
            await remote.close()


async def test_an_altered_token_is_not_the_remembered_one(store: SqliteStore) -> None:
    verifier = TokenVerifier(StaticKeys(issuer().jwks()), issuer=ISSUER, audience=AUDIENCE)
    good = token(Role.VIEWER, [A])
    head, payload, signature = good.split(".")
    altered = ".".join((head, payload, signature[:-2] + ("AA" if signature[-2:] != "AA"
                                                          else "BB")))
    async with TestClient(TestServer(app_for(store, verifier))) as c:
        ok = await c.get("/api/facilities", headers={"Authorization": f"Bearer {good}"})
        assert ok.status == 200
        resp = await c.get("/api/facilities", headers={"Authorization": f"Bearer {altered}"})
        assert resp.status == 401


async def test_each_remembered_token_keeps_its_own_scope(store: SqliteStore) -> None:
    verifier = TokenVerifier(StaticKeys(issuer().jwks()), issuer=ISSUER, audience=AUDIENCE)
    admin, viewer_a = bearer(Role.ADMIN), bearer(Role.VIEWER, [A])
    async with TestClient(TestServer(app_for(store, verifier))) as c:
        for _ in range(2):  # the second round is served from the cache
            assert (await c.get(f"/api/facilities/{B}/current", headers=admin)).status == 200
            refused = await c.get(f"/api/facilities/{B}/current", headers=viewer_a)
            assert refused.status == 403
            assert (await refused.json())["error_code"] == "facility_forbidden"
            listed = await (await c.get("/api/facilities", headers=viewer_a)).json()
            assert [f["facility_id"] for f in listed["facilities"]] == [A]
        assert len(verifier.cache) == 2
