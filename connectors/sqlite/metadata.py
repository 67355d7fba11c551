"""Facilities and meters in the embedded store (``MetadataStore``)."""

from __future__ import annotations

import sqlite3
from typing import Any

from connectors.sqlite.db import SqliteDb
from schemas.metadata import Facility, Meter, MeterType

_FACILITY_COLUMNS = ("facility_id, name, timezone, contract_demand_kw, latitude, longitude, "
                     "country, dr_baseline")


def _facility_row(f: Facility) -> tuple[Any, ...]:
    return (f.facility_id, f.name, f.timezone, f.contract_demand_kw, f.latitude, f.longitude,
            f.country, f.dr_baseline)


def _facility(r: tuple[Any, ...]) -> Facility:
    return Facility(facility_id=r[0], name=r[1], timezone=r[2], contract_demand_kw=r[3],
                    latitude=r[4], longitude=r[5], country=r[6], dr_baseline=r[7])


class SqliteMetadata:
    """``MetadataStore`` through the file's connection object, shared with the other areas."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    async def facilities(self) -> list[Facility]:
        rows = await self._db.read(
            f"SELECT {_FACILITY_COLUMNS} FROM facilities ORDER BY facility_id"
        )
        return [_facility(r) for r in rows]

    async def facility(self, facility_id: str) -> Facility | None:
        rows = await self._db.read(
            f"SELECT {_FACILITY_COLUMNS} FROM facilities WHERE facility_id = ?", (facility_id,)
        )
        return _facility(rows[0]) if rows else None

    async def meters(self) -> list[Meter]:
        rows = await self._db.read(
            "SELECT meter_id, facility_id, meter_type, sample_interval_s FROM meters "
            "ORDER BY meter_id"
        )
        return [Meter(meter_id=r[0], facility_id=r[1], meter_type=MeterType(r[2]),
                      sample_interval_s=r[3]) for r in rows]

    async def upsert_facilities(self, facilities: list[Facility]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT INTO facilities ({_FACILITY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (facility_id) DO UPDATE SET name = excluded.name,"
                " timezone = excluded.timezone, contract_demand_kw = excluded.contract_demand_kw,"
                " latitude = excluded.latitude, longitude = excluded.longitude,"
                " country = excluded.country, dr_baseline = excluded.dr_baseline",
                [_facility_row(f) for f in facilities],
            )

        await self._db.write(write, op="upsert_facilities")

    async def upsert_meters(self, meters: list[Meter]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO meters (meter_id, facility_id, meter_type, sample_interval_s) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET "
                "facility_id = excluded.facility_id, meter_type = excluded.meter_type, "
                "sample_interval_s = excluded.sample_interval_s",
                [(m.meter_id, m.facility_id, m.meter_type.value, m.sample_interval_s)
                 for m in meters],
            )

        await self._db.write(write, op="upsert_meters")

    async def ping(self) -> None:
        await self._db.read("SELECT 1")
