"""Bodies and answers of the people routes (issue 16): strict (unknown fields are refused),
bounded, and never carrying a password hash or a session id's digest beyond its own
owner's."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from agents.identity.passwords import MAX_LENGTH as PASSWORD_MAX_LENGTH
from schemas.common import Identifier
from schemas.identity import EMAIL_MAX_LENGTH, DisplayName, Email, PersonRole, User


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    email: str = Field(min_length=1, max_length=EMAIL_MAX_LENGTH + 64)
    """Any text: one that is no address is an unknown account (the same answer)."""
    password: str = Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)
    organisation_id: Identifier | None = None
    """For a member of several organisations: which one (default: the first by id)."""


class UserView(Strict):
    user_id: str
    email: str
    display_name: str
    status: Literal["active", "disabled"]
    created_at: AwareDatetime
    last_sign_in_at: AwareDatetime | None = None
    oidc: bool = False

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(user_id=user.user_id, email=user.email, display_name=user.display_name,
                   status=user.status, created_at=user.created_at,
                   last_sign_in_at=user.last_sign_in_at, oidc=user.oidc_subject is not None)


class OrganisationView(Strict):
    organisation_id: str
    name: str


class Me(Strict):
    """Who is calling: a signed-in person (``via`` session: user, organisation, CSRF token),
    or a token or key (their role and facilities only)."""

    via: Literal["token", "api_key", "session"]
    role: str
    facility_ids: list[str] | None
    """None: every facility (an admin token)."""
    user: UserView | None = None
    organisation: OrganisationView | None = None
    csrf_token: str | None = None
    """Send it as ``X-CSRF-Token`` on every POST/PUT/PATCH/DELETE of this session."""
    session_expires_at: AwareDatetime | None = None
    """The session's absolute expiry (it also ends after its idle timeout)."""


class SignedOut(Strict):
    signed_out: bool
    """Whether a live session was revoked (a token or key has none: false)."""


class UserCreate(Strict):
    email: Email
    display_name: DisplayName
    role: PersonRole
    password: str | None = Field(default=None, min_length=1, max_length=PASSWORD_MAX_LENGTH)
    """None: the user signs in through OIDC, or after a password reset."""
    facility_ids: list[Identifier] = Field(default_factory=list, max_length=1000)


class UserUpdate(Strict):
    display_name: DisplayName | None = None
    role: PersonRole | None = None
    status: Literal["active", "disabled"] | None = None


class Member(Strict):
    user: UserView
    role: PersonRole
    facility_ids: list[str]


class Members(Strict):
    organisation_id: str
    users: list[Member]


class Assignment(Strict):
    facility_ids: list[Identifier] = Field(max_length=1000)
