"""The demo fleet's people (issue 16, ``streams/demo_people.py``): the demo organisation
takes the facilities no one owns, one user per role is made with a random password once, and
a second start makes and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.identity.passwords import Argon2Params, PasswordHasher
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.identity import Organisation, PersonRole
from schemas.metadata import Facility
from streams.demo_people import demo_block, demo_email, provision

pytestmark = pytest.mark.integration

HASHER = PasswordHasher(Argon2Params(time_cost=1, memory_cost_kib=8 * 1024))
FLEET = ["fac-001", "fac-002", "fac-003", "fac-004"]
R = PersonRole


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    await s.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                               for f in FLEET])
    # fac-004 is a customer's already: the demo does not take it.
    await s.add_organisation(Organisation(organisation_id="acme", name="Acme"))
    await s.set_facility_organisation("fac-004", "acme")
    yield s
    await s.close()


async def test_one_user_per_role_once(store: SqliteStore) -> None:
    now = datetime.now(UTC)
    made = await provision(store, HASHER, FLEET, at=now)
    assert [u.role for u in made] == list(PersonRole)
    assert await store.organisation_facilities("demo") == FLEET[:3]
    assert await store.facility_organisation("fac-004") == "acme"
    # The organisation-wide roles see every facility unassigned; the others some.
    assigned = {R.ADMIN: (), R.ENERGY_MANAGER: (), R.FACILITY_MANAGER: ("fac-001",),
                R.OPERATOR: ("fac-001", "fac-002"), R.VIEWER: ("fac-001",)}
    for u in made:
        user = await store.user_by_email(u.email)
        assert user is not None and u.email == demo_email(u.role)
        assert HASHER.verify(user.password_hash, u.password)
        assert len(u.password) >= 16 and len({x.password for x in made}) == len(made)
        membership = await store.membership(user.user_id, "demo")
        assert membership is not None and membership.role is u.role
        assert membership.facility_ids == u.facility_ids == assigned[u.role]

    hashes = {u.email: (await store.user_by_email(u.email)) for u in made}
    assert await provision(store, HASHER, FLEET, at=now) == []  # a restart: nothing
    assert {u.email: (await store.user_by_email(u.email)) for u in made} == hashes


async def test_the_block_names_every_account_once(store: SqliteStore) -> None:
    made = await provision(store, HASHER, FLEET, at=datetime.now(UTC))
    block = demo_block(made, base_url="http://127.0.0.1:8080")
    lines = block.splitlines()
    assert "DEMO ACCOUNTS" in lines[0] and set(lines[-1]) == {"="}
    assert len(lines[-1]) == len(lines[0])
    for u in made:
        assert block.count(u.password) == 1 and block.count(u.email) == 1
    assert "http://127.0.0.1:8080/api/auth/login" in block
