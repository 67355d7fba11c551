"""Every route of the API declared once: its handler, who may call it, and what the OpenAPI
document says about it. ``create_app`` registers these and nothing else, the middleware
enforces the roles and the facility scope, and ``api/openapi.py`` writes the spec from them, so
the three cannot drift apart (tests/e2e/test_api_spec.py checks the spec against the
router)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from api.principal import Role

UNLIMITED_PATHS = frozenset({"/healthz"})
"""Not limited per address: a load balancer's probes must never be refused (a 429 there takes
the node out of rotation, turning a flood into an outage), and health is cheap (one store
ping, nothing parsed). Every other path may answer 429 and its OpenAPI operation says so."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EVERY_ROLE = frozenset(Role)
ADMIN = frozenset({Role.ADMIN})
PEOPLE = frozenset(Role) - {Role.UTILITY}
"""Every role a person can have in an organisation (``schemas.identity.PersonRole``)."""
USER_MANAGERS = frozenset({Role.ADMIN, Role.ENERGY_MANAGER})

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class Source:
    """Where a caller finds a value for a parameter: a field of another operation's answer.
    The OpenAPI document turns each into a link on that answer, so a client (and
    schemathesis's stateful phase) can chain the two calls instead of guessing ids."""

    method: Method
    path: str
    status: int
    pointer: str
    """A JSON pointer into the answer's body, e.g. ``/facilities/0/facility_id``; checked
    against the answer's schema when the document is built."""


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["query", "path"]
    schema: dict[str, Any]
    description: str
    required: bool = False
    sources: tuple[Source, ...] = ()
    """Answers that carry a value for it (the OpenAPI links into the operations taking it)."""


FACILITY_ID = Param("facility_id", "path", {"type": "string", "maxLength": 64,
                                           "pattern": r"^[A-Za-z0-9_.-]+$"},
                    "a facility the caller may see", required=True,
                    sources=(Source("GET", "/api/facilities", 200, "/facilities/0/facility_id"),))


@dataclass(frozen=True)
class Endpoint:
    method: Method
    path: str
    handler: Handler
    summary: str
    tag: str
    roles: frozenset[Role] | None
    """Who may call it; ``None``: public (health, the spec, the issuer's public keys)."""
    response: type[BaseModel] | None = None
    response_type: str = "application/json"
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    ok_statuses: tuple[int, ...] = (200,)
    """Statuses answered with ``response`` (health is 503 with the same body when degraded)."""
    errors: tuple[int, ...] = ()
    """Error statuses besides the ones every authenticated route has (401, 403, 429, 503)."""
    description: str = ""
    cacheable: bool = False
    """Public documents a cache may keep (the spec, the issuer's keys); every other answer is
    ``Cache-Control: no-store``."""
    people_only: bool = False
    """Acts within the caller's organisation (users, sessions, the audit log): a signed-in
    person only (a session); a token or API key has no organisation and is refused (403)."""
    every_facility: bool = False
    """Spans every facility (metrics, dead letters): only a caller that sees every facility,
    i.e. an admin token; an organisation's admin, who sees its facilities only, is refused."""

    @property
    def scoped(self) -> bool:
        """The path names a facility: the caller must be allowed to see it."""
        return "{facility_id}" in self.path
