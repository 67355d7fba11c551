"""The live registry snapshot shared by the agents, reloaded when metadata changes."""

from __future__ import annotations

from schemas.metadata import Registry
from tables.ports.metadata import MetadataStore


class RegistryHolder:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self._current = Registry()

    def __call__(self) -> Registry:
        return self._current

    async def reload(self) -> Registry:
        self._current = Registry.build(await self._store.facilities(), await self._store.meters())
        return self._current
