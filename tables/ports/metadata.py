"""The metadata port: facilities and meters. Adapters: SQLite, PostgreSQL."""

from __future__ import annotations

from typing import Protocol

from schemas.metadata import Facility, Meter


class MetadataStore(Protocol):
    async def facilities(self) -> list[Facility]: ...

    async def meters(self) -> list[Meter]: ...

    async def upsert_facilities(self, facilities: list[Facility]) -> None: ...

    async def upsert_meters(self, meters: list[Meter]) -> None: ...

    async def ping(self) -> None: ...
