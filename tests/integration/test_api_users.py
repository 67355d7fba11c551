"""Managing people through the API (issue 16): members, roles, assignments, sessions and
the audit log, within the caller's organisation; each bad input a clear 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.identity import PersonRole, sha256_hex
from tests.integration.test_api_sign_in import A2, A, B, Clock, CountingHasher, app_for, seeded
from tests.people_helpers import (
    FAST,
    ORG,
    OTHER_ORG,
    Client,
    Session,
    email_of,
    login,
    user_id_of,
)

pytestmark = pytest.mark.integration

R = PersonRole
VIEWER = user_id_of(R.VIEWER)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    from connectors.sqlite import SqliteStore
    from core.metrics import Metrics
    from schemas.metadata import Facility

    store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await store.open()
    await store.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                                   for f in (A, A2, B)])
    hasher = CountingHasher(FAST)
    await seeded(store, hasher)
    async with TestClient(TestServer(app_for(store, store.sessions, hasher,
                                             clock=Clock()))) as c:
        yield c
    await store.close()


async def call(client: Client, s: Session, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, headers=s.headers(),
                                json=body if body is not None else None)
    return resp.status, await resp.json()


NEW = {"email": "new@org-1.example.com", "display_name": "New Person", "role": "operator"}


@pytest.mark.parametrize(("body", "status", "code"), [
    ({**NEW, "is_superuser": True}, 400, "invalid_body"),  # unknown field
    ({**NEW, "email": "a" * 300 + "@org-1.example.com"}, 400, "invalid_body"),  # too long
    ({**NEW, "display_name": "x" * 201}, 400, "invalid_body"),  # over-long name
    ({**NEW, "role": "superuser"}, 400, "invalid_body"),  # invalid role
    ({**NEW, "facility_ids": [B]}, 400, "wrong_organisation"),  # org-2's facility
    ({**NEW, "password": "password123"}, 400, "weak_password"),  # common
    ({**NEW, "email": email_of(R.VIEWER)}, 409, "email_taken"),
    ({**NEW, "role": "admin"}, 403, "role_not_grantable"),  # above an energy manager
])
async def test_bad_new_members_are_refused(client: Client, body: dict[str, Any], status: int,
                                           code: str) -> None:
    s = await login(client, email_of(R.ENERGY_MANAGER))
    got, answer = await call(client, s, "POST", "/api/users", body)
    assert (got, answer["error_code"]) == (status, code), answer
    assert set(answer) == {"error_code", "message", "details"}
    _, listed = await call(client, s, "GET", "/api/users")
    assert "new@org-1.example.com" not in str(listed)  # nothing half-written


async def test_a_new_member_signs_in_with_their_facilities(client: Client) -> None:
    s = await login(client, email_of(R.ENERGY_MANAGER))
    status, member = await call(client, s, "POST", "/api/users", {
        **NEW, "password": "a long unusual passphrase", "facility_ids": [A2]})
    assert status == 201 and member["role"] == "operator" and member["facility_ids"] == [A2]
    new = await login(client, NEW["email"], "a long unusual passphrase")
    _, me = await call(client, new, "GET", "/api/me")
    assert me["facility_ids"] == [A2]
    status, _ = await call(client, s, "PUT", f"/api/users/{member['user']['user_id']}"
                           "/facilities", {"facility_ids": [A]})
    _, me = await call(client, new, "GET", "/api/me")
    assert status == 200 and me["facility_ids"] == [A]  # at the next request


async def test_roles_and_organisations_bound_what_a_manager_changes(client: Client) -> None:
    em = await login(client, email_of(R.ENERGY_MANAGER))
    admin_id = user_id_of(R.ADMIN)
    # Not above themselves, not someone above them, not another organisation's member.
    assert (await call(client, em, "PATCH", f"/api/users/{VIEWER}", {"role": "admin"}))[0] \
        == 403
    assert (await call(client, em, "PATCH", f"/api/users/{admin_id}",
                       {"display_name": "X"}))[0] == 403
    other = user_id_of(R.VIEWER, OTHER_ORG)
    status, answer = await call(client, em, "PATCH", f"/api/users/{other}", {"role": "viewer"})
    assert (status, answer["error_code"]) == (404, "user_not_found")
    status, answer = await call(client, em, "PUT", f"/api/users/{VIEWER}/facilities",
                                {"facility_ids": [B]})
    assert (status, answer["error_code"]) == (400, "wrong_organisation")
    # The last admin stays one.
    admin = await login(client, email_of(R.ADMIN))
    status, answer = await call(client, admin, "PATCH", f"/api/users/{admin_id}",
                                {"role": "viewer"})
    assert (status, answer["error_code"]) == (409, "last_admin")
    status, answer = await call(client, admin, "PATCH", f"/api/users/{admin_id}",
                                {"status": "disabled"})
    assert (status, answer["error_code"]) == (409, "last_admin")
    assert (await call(client, admin, "PATCH", f"/api/users/{VIEWER}",
                       {"status": "nope"}))[0] == 400


async def test_disabling_a_member_revokes_their_sessions(client: Client) -> None:
    viewer = await login(client, email_of(R.VIEWER))
    admin = await login(client, email_of(R.ADMIN))
    status, member = await call(client, admin, "PATCH", f"/api/users/{VIEWER}",
                                {"status": "disabled"})
    assert status == 200 and member["user"]["status"] == "disabled"
    assert (await client.get("/api/me", headers=viewer.headers())).status == 401
    _, log = await call(client, admin, "GET", "/api/audit")
    actions = [r["action"] for r in log["records"]]
    assert actions[:2] == ["sessions_revoked_all", "user_disabled"]
    assert log["records"][0]["client_address"] == "127.0.0.1"


async def test_sessions_are_listed_and_revoked_by_owner_and_admin(client: Client) -> None:
    first = await login(client, email_of(R.VIEWER))
    second = await login(client, email_of(R.VIEWER))
    _, own = await call(client, second, "GET", "/api/sessions")
    assert sorted(s["session_id"] for s in own["sessions"]) == sorted(
        sha256_hex(x.session_id) for x in (first, second))
    assert [s["session_id"] for s in own["sessions"] if s["current"]] == [
        sha256_hex(second.session_id)]
    # Someone else's session is not one a viewer may see or revoke.
    em = await login(client, email_of(R.ENERGY_MANAGER))
    status, _ = await call(client, second, "DELETE",
                           f"/api/sessions/{sha256_hex(em.session_id)}")
    assert status == 404
    # The admin sees and revokes any of the organisation's.
    admin = await login(client, email_of(R.ADMIN))
    _, everyone = await call(client, admin, "GET", "/api/sessions")
    assert len(everyone["sessions"]) == 4
    status, answer = await call(client, admin, "DELETE",
                                f"/api/sessions/{sha256_hex(first.session_id)}")
    assert (status, answer) == (200, {"revoked": 1})
    assert (await client.get("/api/me", headers=first.headers())).status == 401
    # Sign out everywhere: every session of the caller's, this one too.
    third = await login(client, email_of(R.VIEWER))
    status, answer = await call(client, third, "DELETE", "/api/sessions")
    assert (status, answer) == (200, {"revoked": 2})
    for s in (second, third):
        assert (await client.get("/api/me", headers=s.headers())).status == 401
    assert (await client.get("/api/me", headers=em.headers())).status == 200
    _, log = await call(client, admin, "GET", "/api/audit?limit=3")
    assert [r["action"] for r in log["records"]][:1] == ["sessions_revoked_all"]
    assert log["organisation_id"] == ORG
