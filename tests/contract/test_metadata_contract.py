"""The metadata port's contract: facilities and meters, the same in SQLite and in PostgreSQL
(alone and in the production store)."""

from __future__ import annotations

import pytest

from schemas.metadata import Facility, Meter, MeterType
from tests.contract.adapters import RelationalStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(relational: RelationalStore) -> RelationalStore:
    """Every adapter of the port: SQLite, PostgreSQL, InfluxDB + PostgreSQL (conftest.py)."""
    return relational


FACILITIES = [Facility(facility_id="plant-a", name="Plant A", timezone="Europe/Berlin",
                       contract_demand_kw=400.0),
              Facility(facility_id="plant-b", name="Plant B", contract_demand_kw=150.0)]
METERS = [Meter(meter_id="a-main", facility_id="plant-a", meter_type=MeterType.MAIN,
                sample_interval_s=15),
          Meter(meter_id="a-hvac", facility_id="plant-a", meter_type=MeterType.HVAC,
                sample_interval_s=15),
          Meter(meter_id="b-main", facility_id="plant-b", meter_type=MeterType.MAIN,
                sample_interval_s=15)]
SITE = Facility(facility_id="plant-c", name="C", contract_demand_kw=100,
                timezone="America/Chicago", latitude=41.88, longitude=-87.63, country="US",
                dr_baseline="caiso_10_in_10")


async def test_metadata_upserts_replace_and_list_in_id_order(store: RelationalStore) -> None:
    await store.upsert_facilities(list(reversed(FACILITIES)))
    await store.upsert_meters(METERS)
    changed = FACILITIES[0].model_copy(update={"contract_demand_kw": 450.0,
                                               "dr_baseline": "pjm_high_4_of_5"})
    await store.upsert_facilities([changed])
    assert await store.facilities() == [changed, FACILITIES[1]]
    assert await store.meters() == sorted(METERS, key=lambda m: m.meter_id)
    await store.ping()


async def test_facility_location_and_country_round_trip(store: RelationalStore) -> None:
    bare = Facility(facility_id="plant-d", name="D", contract_demand_kw=100)
    await store.upsert_facilities([SITE, bare])
    assert await store.facilities() == [SITE, bare]


async def test_one_facility_by_its_id(store: RelationalStore) -> None:
    assert await store.facility("plant-a") is None  # none stored yet
    await store.upsert_facilities([*FACILITIES, SITE])
    assert await store.facility("plant-a") == FACILITIES[0]
    assert await store.facility("plant-c") == SITE  # every field round-trips
    assert await store.facility("plant-x") is None  # unknown
    assert await store.facility("Plant-A") is None  # ids are exact: another case is another id
    assert await store.facility("plant-%") is None  # and not a pattern
    changed = FACILITIES[0].model_copy(update={"name": "Plant A North", "latitude": 48.1,
                                               "longitude": 11.6})
    await store.upsert_facilities([changed])
    assert await store.facility("plant-a") == changed  # the upsert is what it answers
