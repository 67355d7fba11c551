"""Who is calling, and what they may see: roles and facility scope."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    """What a caller may do. Reads are scoped to the caller's facilities for every role but
    admin; what each route allows is declared with the route (``api/endpoints.py``)."""

    VIEWER = "viewer"  # dashboards: read its facilities' data
    OPERATOR = "operator"  # a building operator: read and acknowledge
    FACILITY_MANAGER = "facility_manager"  # read, and act on its facilities (DR opt-out...)
    ENERGY_MANAGER = "energy_manager"  # every facility of an organisation, its users
    UTILITY = "utility"  # a utility's systems: DR events for enrolled facilities
    ADMIN = "admin"  # a token: every facility, dead letters, metrics; a person: their
    # organisation's facilities, users, sessions and audit log (``Principal.via``)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role
    facility_ids: frozenset[str] | None
    """The facilities this caller may see; ``None`` means every facility (admin)."""
    via: Literal["token", "api_key", "session"]
    """A bearer JWT, a utility's API key, or a signed-in person's session cookie."""
    utility_id: str | None = None
    """The utility an API key belongs to."""
    issuer: str | None = None
    """A token's ``iss``: subjects are unique per issuer only."""
    key_id: str | None = None
    """An API key's id."""
    user_id: str | None = None
    """A signed-in person (``via="session"``)."""
    organisation_id: str | None = None
    """The organisation a person signed in to: their role and facilities are within it."""
    rate_key: str = field(init=False, compare=False)
    """Whose budget a request spends (``_rate_key``), computed once: a principal is made
    once per verified token (``api/token_cache.py``) and checked on every request."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_key", self._rate_key())

    def may_access(self, facility_id: str) -> bool:
        return self.facility_ids is None or facility_id in self.facility_ids

    def _rate_key(self) -> str:
        """Whose budget a request spends. An API key: its id (a utility's keys are separate
        systems). A token: issuer, subject, role and facility scope together. ``sub`` alone is
        not a caller: every ``sems token create`` without ``--subject`` says ``sems-cli``, so
        a viewer's dashboard and an admin's metrics scrape shared one bucket. The token id
        (``jti``) would be too fine: an identity provider mints a new one at every refresh, so
        a caller could refill its own bucket. Issuer, subject, role and scope are what the
        identity provider decides and the caller cannot change."""
        if self.via == "api_key":
            return f"api_key:{self.key_id or self.subject}"
        if self.via == "session":  # one person, however many browsers
            return f"person:{self.user_id or self.subject}"
        scope = "*" if self.facility_ids is None else ",".join(sorted(self.facility_ids))
        digest = hashlib.sha256(scope.encode()).hexdigest()[:16]
        return f"token:{self.issuer or ''}:{self.subject}:{self.role.value}:{digest}"
