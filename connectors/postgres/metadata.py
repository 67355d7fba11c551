"""Facilities and meters in PostgreSQL (``MetadataStore``); schema in migrations 0001, 0003, 0005.
Upserts where the last row of a list wins and ids in byte order, as in SQLite."""

from __future__ import annotations

from psycopg.rows import TupleRow

from connectors.postgres.db import PostgresDb, columns, last_wins
from schemas.metadata import Facility, Meter, MeterType

_FACILITY_COLUMNS = ("facility_id, name, timezone, contract_demand_kw, latitude, longitude, "
                     "country, dr_baseline")
_UPSERT_FACILITIES = (
    f"INSERT INTO facilities ({_FACILITY_COLUMNS}) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::float8[], "
    "%b::float8[], %b::text[], %b::text[]) "
    "ON CONFLICT (facility_id) DO UPDATE SET name = excluded.name, "
    "timezone = excluded.timezone, contract_demand_kw = excluded.contract_demand_kw, "
    "latitude = excluded.latitude, longitude = excluded.longitude, country = excluded.country, "
    "dr_baseline = excluded.dr_baseline"
)
_UPSERT_METERS = (
    "INSERT INTO meters (meter_id, facility_id, meter_type, sample_interval_s) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[]) "
    "ON CONFLICT (meter_id) DO UPDATE SET facility_id = excluded.facility_id, "
    "meter_type = excluded.meter_type, sample_interval_s = excluded.sample_interval_s"
)


def _facility(r: TupleRow) -> Facility:
    return Facility(facility_id=r[0], name=r[1], timezone=r[2], contract_demand_kw=r[3],
                    latitude=r[4], longitude=r[5], country=r[6], dr_baseline=r[7])


class PostgresMetadata:
    """``MetadataStore`` through the store's pool (``PostgresDb``)."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    async def facilities(self) -> list[Facility]:
        rows = await self._db.read(
            "facilities", f"SELECT {_FACILITY_COLUMNS} FROM facilities ORDER BY facility_id",
        )
        return [_facility(r) for r in rows]

    async def facility(self, facility_id: str) -> Facility | None:
        rows = await self._db.read(
            "facility", f"SELECT {_FACILITY_COLUMNS} FROM facilities WHERE facility_id = %s",
            (facility_id,),
        )
        return _facility(rows[0]) if rows else None

    async def meters(self) -> list[Meter]:
        rows = await self._db.read(
            "meters", "SELECT meter_id, facility_id, meter_type, sample_interval_s "
            "FROM meters ORDER BY meter_id",
        )
        return [Meter(meter_id=r[0], facility_id=r[1], meter_type=MeterType(r[2]),
                      sample_interval_s=r[3]) for r in rows]

    async def upsert_facilities(self, facilities: list[Facility]) -> None:
        rows = [(f.facility_id, f.name, f.timezone, f.contract_demand_kw, f.latitude,
                 f.longitude, f.country, f.dr_baseline)
                for f in last_wins(facilities, lambda f: f.facility_id)]
        if not rows:
            return
        async with self._db.transaction("upsert_facilities") as conn:
            await conn.execute(_UPSERT_FACILITIES, columns(rows, 8))
        self._db.written("facilities", len(rows))

    async def upsert_meters(self, meters: list[Meter]) -> None:
        rows = [(m.meter_id, m.facility_id, m.meter_type.value, m.sample_interval_s)
                for m in last_wins(meters, lambda m: m.meter_id)]
        if not rows:
            return
        async with self._db.transaction("upsert_meters") as conn:
            await conn.execute(_UPSERT_METERS, columns(rows, 4))
        self._db.written("meters", len(rows))

    async def ping(self) -> None:
        await self._db.read("ping", "SELECT 1")
