"""The registry as ``/api/facilities`` lists it: facilities and their meters, held in process
for ``ttl_s`` (``SEMS_API_METADATA_TTL_S``, 5 s), the list serialized once per refresh,
instead of two store queries and every facility's and meter's pydantic dump per request.

What that costs: a new or changed facility or meter shows up to ``ttl_s`` late in the list.
The route still has the store answer a ping first, so an unavailable store is a 503 there as
before. Concurrent refreshes share one pair of store queries; a failed refresh raises to its
callers (503) and the next request tries again. ``ttl_s`` 0 reads the store every time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tables.ports.metadata import MetadataStore


@dataclass(frozen=True, slots=True)
class Registry:
    listing: tuple[tuple[str, dict[str, Any]], ...]
    """Each facility id with its ``/api/facilities`` entry (the facility and its meters)."""
    listing_body: bytes
    """The whole list serialized, for callers who see every facility."""


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
    return Registry(listing=listing,
                    listing_body=orjson.dumps({"facilities": [e for _, e in listing]}))


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
