"""The metadata port: facilities and meters. Adapters: SQLite, PostgreSQL (and the production
store, which keeps them in PostgreSQL)."""

from __future__ import annotations

from typing import Protocol

from schemas.metadata import Facility, Meter


class MetadataStore(Protocol):
    async def facilities(self) -> list[Facility]: ...

    async def facility(self, facility_id: str) -> Facility | None:
        """One facility by its id (a primary-key lookup), ``None`` when there is none."""
        ...

    async def meters(self) -> list[Meter]: ...

    async def upsert_facilities(self, facilities: list[Facility]) -> None: ...

    async def upsert_meters(self, meters: list[Meter]) -> None: ...

    async def ping(self) -> None: ...
