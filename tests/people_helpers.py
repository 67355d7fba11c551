"""People for API tests (issue 16): two organisations, one user per role, sign-in by hand
(the session cookie sent explicitly, so each request says which session it is)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from agents.identity.passwords import Argon2Params, PasswordHasher
from api.people import CSRF_HEADER, PLAIN_COOKIE
from schemas.identity import Organisation, PersonRole, User
from tables.ports.identity import IdentityStore

Client = TestClient[web.Request, web.Application]

FAST = Argon2Params(time_cost=1, memory_cost_kib=8 * 1024)
"""Cheap hashes: the tests check the rules, not argon2's cost."""
PASSWORD = "correct horse battery staple"
ORG, OTHER_ORG = "org-1", "org-2"


def email_of(role: PersonRole, org: str = ORG) -> str:
    return f"{role.value.replace('_', '-')}@{org}.example.com"


def user_id_of(role: PersonRole, org: str = ORG) -> str:
    return f"{org}-{role.value}"


async def seed(identity: IdentityStore, hasher: PasswordHasher, *,
               facilities: dict[str, tuple[str, ...]], assigned: tuple[str, ...]) -> None:
    """The organisations owning ``facilities`` (already registered); in ``ORG`` and
    ``OTHER_ORG`` one user per role (password ``PASSWORD``), the facility-scoped ones assigned
    ``assigned`` (of ``ORG``) or nothing (``OTHER_ORG``)."""
    password_hash = hasher.hash(PASSWORD)
    now = datetime.now(UTC)
    for org, owned in facilities.items():
        await identity.add_organisation(Organisation(organisation_id=org, name=org.upper()))
        for facility in owned:
            await identity.set_facility_organisation(facility, org)
        for role in PersonRole:
            uid = user_id_of(role, org)
            await identity.add_user(User(user_id=uid, email=email_of(role, org),
                                         display_name=f"{role.value} of {org}",
                                         created_at=now, password_hash=password_hash))
            await identity.set_membership(uid, org, role)
            if org == ORG and role.value in ("facility_manager", "operator", "viewer"):
                await identity.set_assignments(uid, org, assigned)


@dataclass(frozen=True)
class Session:
    session_id: str
    csrf: str
    cookie_name: str = PLAIN_COOKIE

    def headers(self, *, csrf: bool = True) -> dict[str, str]:
        out = {"Cookie": f"{self.cookie_name}={self.session_id}"}
        if csrf:
            out[CSRF_HEADER] = self.csrf
        return out


async def login(client: Client, email: str, password: str = PASSWORD, *,
                cookie_name: str = PLAIN_COOKIE, **body: Any) -> Session:
    resp = await client.post("/api/auth/login",
                             json={"email": email, "password": password, **body})
    assert resp.status == 200, await resp.text()
    session_id = resp.cookies[cookie_name].value
    csrf = (await resp.json())["csrf_token"]
    client.session.cookie_jar.clear()  # each request names its session itself
    return Session(session_id, csrf, cookie_name)
