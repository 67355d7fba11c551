"""Utilities and API keys: the same behaviour in SQLite and in PostgreSQL (alone and in the
production store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from api import apikeys
from schemas.access import Utility
from schemas.metadata import Facility
from tests.contract.adapters import RelationalStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(relational: RelationalStore) -> RelationalStore:
    """Every adapter of the port: SQLite, PostgreSQL, InfluxDB + PostgreSQL (conftest.py)."""
    return relational


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _facilities(store: RelationalStore) -> None:
    await store.upsert_facilities([
        Facility(facility_id=f, name=f, contract_demand_kw=100) for f in ("fac-a", "fac-b")])


async def test_utilities_upsert_replaces_and_list_in_id_order(store: RelationalStore) -> None:
    await _facilities(store)
    await store.upsert_utility(Utility(utility_id="u2", name="Second", facility_ids=("fac-b",),
                                       webhook_secret=SecretStr("s2")))
    await store.upsert_utility(Utility(utility_id="u1", name="First", facility_ids=("fac-a",),
                                       webhook_secret=SecretStr("s1")))
    await store.upsert_utility(Utility(utility_id="u1", name="First Power",
                                       facility_ids=("fac-a", "fac-b"),
                                       webhook_secret=SecretStr("s1-rotated")))
    listed = await store.utilities()
    assert [(u.utility_id, u.name, u.facility_ids) for u in listed] == [
        ("u1", "First Power", ("fac-a", "fac-b")), ("u2", "Second", ("fac-b",))]
    one = await store.utility("u1")
    assert one is not None and one.webhook_secret.get_secret_value() == "s1-rotated"
    assert await store.utility("nope") is None


async def test_api_keys_are_found_by_id_and_revoked_once(store: RelationalStore) -> None:
    await _facilities(store)
    await store.upsert_utility(Utility(utility_id="u1", name="U", webhook_secret=SecretStr("s")))
    issued = apikeys.issue("u1", now=T0)
    await store.add_api_key(issued.record)

    found = await store.api_key(issued.record.key_id)
    assert found == issued.record
    parsed = apikeys.parse(issued.key)
    assert parsed is not None and apikeys.matches(found, parsed[1])
    assert issued.key not in found.model_dump_json()  # only the digest is stored

    assert await store.revoke_api_key(issued.record.key_id, at=T0 + timedelta(hours=1))
    assert not await store.revoke_api_key(issued.record.key_id, at=T0 + timedelta(hours=2))
    revoked = await store.api_key(issued.record.key_id)
    assert revoked is not None and revoked.revoked_at == T0 + timedelta(hours=1)
    assert not revoked.active(T0 + timedelta(hours=1))
    assert await store.api_key("0123456789abcdef") is None
