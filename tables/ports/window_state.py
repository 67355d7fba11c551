"""The window-state port: where a worker keeps its facilities' open windows between batches.
Adapter: the kafka runtime's changelog-backed Faust table (``streams/kafka.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from tables.rollups import FacilityWindows


class WindowStateStore(Protocol):
    """Where a worker keeps its facilities' open windows between batches (the kafka runtime's
    changelog-backed table). The local runtime has none: it rebuilds from the store."""

    def load(self, facility_id: str) -> FacilityWindows | None: ...

    def encode(self, state: FacilityWindows) -> bytes:
        """The state as it is now: taken when a batch is folded, saved once it is stored."""
        ...

    def save(self, encoded: Mapping[str, bytes]) -> None: ...

    def facility_ids(self) -> Iterable[str]: ...
