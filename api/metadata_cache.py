"""The registry as the API reads it on every request: facilities and their meters, held in
process for ``ttl_s`` (``SEMS_API_METADATA_TTL_S``, 5 s) instead of two store queries per
``/api/facilities`` and one per facility route.

What that costs: a facility's changed name or contracted demand, or a new meter, shows up to
``ttl_s`` late in the list and in ``/current``. A facility id that the snapshot does not know is
looked up in the store at once (and not remembered), so a facility registered a moment ago is
never a 404. Concurrent refreshes share one pair of store queries; a failed refresh raises to
its callers (503) and the next request tries again. ``ttl_s`` 0 reads the store every time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.metadata import Facility
from tables.ports.metadata import MetadataStore


@dataclass(frozen=True, slots=True)
class Registry:
    facilities: dict[str, Facility]
    listing: tuple[tuple[str, dict[str, Any]], ...]
    """Each facility id with its ``/api/facilities`` entry (the facility and its meters)."""
    listing_body: bytes
    """The whole list serialized, for callers who see every facility."""
    meter_ids: dict[str, frozenset[str]]


async def load(store: MetadataStore) -> Registry:
    meters = await store.meters()
    facilities = await store.facilities()
    by_facility: dict[str, list[dict[str, Any]]] = {}
    for m in meters:
        by_facility.setdefault(m.facility_id, []).append(
            m.model_dump(mode="json", exclude={"facility_id"}))
    listing = tuple((f.facility_id, {**f.model_dump(mode="json"),
                                     "meters": by_facility.get(f.facility_id, [])})
                    for f in facilities)
    return Registry(facilities={f.facility_id: f for f in facilities}, listing=listing,
                    listing_body=orjson.dumps({"facilities": [e for _, e in listing]}),
                    meter_ids={fid: frozenset(m.meter_id for m in meters
                                              if m.facility_id == fid)
                               for fid in {m.facility_id for m in meters}})


class MetadataCache:
    def __init__(self, store: MetadataStore, *, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._registry: Registry | None = None
        self._loaded_at = -float("inf")
        self._loading: asyncio.Future[Registry] | None = None

    async def registry(self) -> Registry:
        if self._registry is not None and self._clock() - self._loaded_at < self._ttl_s:
            return self._registry
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._loaded)
        return await asyncio.shield(self._loading)

    async def _load(self) -> Registry:
        started = self._clock()
        registry = await load(self._store)
        if self._ttl_s > 0:
            self._registry, self._loaded_at = registry, started
        return registry

    def _loaded(self, future: asyncio.Future[Registry]) -> None:
        self._loading = None
        if not future.cancelled():
            future.exception()  # retrieved: the callers awaiting it got it

    async def facility(self, facility_id: str) -> Facility | None:
        facility = (await self.registry()).facilities.get(facility_id)
        if facility is None:  # perhaps registered since: the store says
            facility = await self._store.facility(facility_id)
        return facility
