"""Who is calling, and what they may see: roles and facility scope."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    """What a caller may do. Reads are scoped to the caller's facilities for every role but
    admin; what each route allows is declared with the route (``api/endpoints.py``)."""

    VIEWER = "viewer"  # dashboards: read its facilities' data
    FACILITY_MANAGER = "facility_manager"  # read, and act on its facilities (DR opt-out...)
    UTILITY = "utility"  # a utility's systems: DR events for enrolled facilities
    ADMIN = "admin"  # every facility, the registry, dead letters, metrics


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role
    facility_ids: frozenset[str] | None
    """The facilities this caller may see; ``None`` means every facility (admin)."""
    via: Literal["token", "api_key"]
    utility_id: str | None = None
    """The utility an API key belongs to."""

    def may_access(self, facility_id: str) -> bool:
        return self.facility_ids is None or facility_id in self.facility_ids

    @property
    def rate_key(self) -> str:
        """Whose budget a request spends: the token's subject or the API key's id."""
        return f"{self.via}:{self.subject}"
