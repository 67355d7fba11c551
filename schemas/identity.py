"""People: organisations, users, their role in an organisation and the facilities they are
assigned, their sessions, personal API tokens and the audit log (issue 16).

An organisation is a portfolio owner's customer; each facility belongs to at most one (kept
apart from ``Facility``, in the identity store's ``organisation_facilities``). A user has one
role per organisation they belong to (``Membership``). Secrets a client holds (session ids,
personal tokens) are stored as SHA-256 digests only; passwords as argon2id hashes
(``agents/identity/passwords.py``). Every time is aware and normalised to UTC.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.common import Identifier

EMAIL_MAX_LENGTH = 254
"""RFC 5321's limit of a forward path, less its angle brackets."""
_LOCAL_PART = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalise_email(value: str) -> str:
    """The address lower-cased, surrounding blanks removed; or ``ValueError`` saying what is
    wrong with it. The shape accepted: an unquoted ASCII local part of at most 64 characters
    (dot-separated atoms), ``@``, and a domain of at least two labels (letters, digits,
    inner hyphens; internationalised names in their ``xn--`` form), the last not numeric.
    Lower-casing the local part is not what RFC 5321 promises, but what every mail system
    people use does, and two accounts told apart by case alone are a phishing aid."""
    email = value.strip().lower()
    if not email:
        raise ValueError("an email address is required")
    if len(email) > EMAIL_MAX_LENGTH:
        raise ValueError(f"an email address has at most {EMAIL_MAX_LENGTH} characters, "
                         f"this one {len(email)}")
    if email.count("@") != 1:
        raise ValueError("an email address has exactly one '@'")
    local, domain = email.split("@")
    if not 1 <= len(local) <= 64 or not _LOCAL_PART.fullmatch(local):
        raise ValueError("the part before '@' must be 1-64 of letters, digits and "
                         "!#$%&'*+/=?^_`{|}~- in dot-separated runs")
    labels = domain.split(".")
    if (len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
            or labels[-1].isdigit()):
        raise ValueError("the part after '@' must be a domain name such as example.com "
                         "(letters, digits and inner hyphens, dot-separated)")
    return email


SIGN_IN_FAILURE_WINDOW = timedelta(hours=1)
"""A quiet period that resets an account's failed sign-ins: a failure more than this after
the previous one starts the count again at 1 (``IdentityStore.record_sign_in_failure``), and
so the longest lock-out (``agents/identity/lockout.py``'s cap, an hour) ends by itself."""


def account_key(account: str) -> str:
    """What sign-in failures are counted under: the email normalised when it is a valid
    one (so ``Alice@X.com`` and ``alice@x.com`` share a count), otherwise the text stripped,
    lower-cased and cut to ``EMAIL_MAX_LENGTH`` (no account has such an address, so cutting
    merges only counts that lock no one out). ``ValueError`` for a blank one."""
    try:
        return normalise_email(account)
    except ValueError:
        key = account.strip().lower()[:EMAIL_MAX_LENGTH]
    if not key:
        raise ValueError("a sign-in failure needs an account (the email typed)")
    return key


Email = Annotated[str, Field(max_length=EMAIL_MAX_LENGTH + 64,  # blanks are stripped after
                             description="lower-cased; at most 254 characters"),
                  AfterValidator(normalise_email)]


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
"""An aware time, given in any offset and kept in UTC."""

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, hex")]
TokenId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
DisplayName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
ClientAddress = Annotated[str, Field(max_length=64, description="IP address the request came from")]
UserAgent = Annotated[str, Field(max_length=512)]


def sha256_hex(secret: str) -> str:
    """What a session id or personal token is stored as."""
    return hashlib.sha256(secret.encode()).hexdigest()


class PersonRole(StrEnum):
    """One per user per organisation; each role may do all that the ones below it may
    (``agents/identity/permissions.py``), so ``rank`` orders them."""

    ADMIN = "admin"
    ENERGY_MANAGER = "energy_manager"
    FACILITY_MANAGER = "facility_manager"
    OPERATOR = "operator"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        """Higher may do more: viewer 0 ... admin 4."""
        return _RANKS[self]


_RANKS = {role: rank for rank, role in enumerate(reversed(PersonRole))}
ORGANISATION_WIDE_ROLES = frozenset({PersonRole.ADMIN, PersonRole.ENERGY_MANAGER})
"""The roles that see every facility of their organisation, assigned or not."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Organisation(_Record):
    organisation_id: Identifier
    name: DisplayName


UserStatus = Literal["active", "disabled"]


class User(_Record):
    user_id: Identifier
    email: Email
    display_name: DisplayName
    status: UserStatus = "active"
    created_at: UtcDatetime
    last_sign_in_at: UtcDatetime | None = None
    password_hash: str | None = Field(
        default=None, max_length=512, pattern=r"^\$argon2id\$", repr=False,
        description="argon2id (PHC string); none for a user who signs in through OIDC only")
    oidc_issuer: str | None = Field(default=None, min_length=1, max_length=512)
    oidc_subject: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _oidc_pair(self) -> User:
        if (self.oidc_issuer is None) != (self.oidc_subject is None):
            raise ValueError("oidc_issuer and oidc_subject go together: both or neither")
        return self


class Membership(_Record):
    """A user's role in one organisation and, for the roles scoped to facilities, the
    facilities of that organisation they are assigned (sorted)."""

    user_id: Identifier
    organisation_id: Identifier
    role: PersonRole
    facility_ids: tuple[Identifier, ...] = ()


class SessionRecord(_Record):
    """A signed-in browser. The session id itself is only in the client's cookie."""

    session_sha256: Digest
    user_id: Identifier
    organisation_id: Identifier
    created_at: UtcDatetime
    last_seen_at: UtcDatetime
    idle_timeout_s: float = Field(gt=0, le=366 * 86400, allow_inf_nan=False)
    absolute_expires_at: UtcDatetime
    client_address: ClientAddress | None = None
    user_agent: UserAgent | None = None
    revoked_at: UtcDatetime | None = None

    @property
    def idle_expires_at(self) -> datetime:
        return self.last_seen_at + timedelta(seconds=self.idle_timeout_s)

    def live(self, now: datetime) -> bool:
        """Not revoked, and neither idle nor past its absolute lifetime at ``now``."""
        return (self.revoked_at is None and now < self.idle_expires_at
                and now < self.absolute_expires_at)


class AuditAction(StrEnum):
    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_OUT = "sign_out"
    SESSION_REVOKED = "session_revoked"
    SESSIONS_REVOKED_ALL = "sessions_revoked_all"
    LOCKOUT_CLEARED = "lockout_cleared"
    ORGANISATION_CREATED = "organisation_created"
    ORGANISATION_UPDATED = "organisation_updated"
    ORGANISATION_DELETED = "organisation_deleted"
    FACILITY_ORGANISATION_SET = "facility_organisation_set"
    USER_CREATED = "user_created"
    USER_UPDATED = "user_updated"
    USER_DISABLED = "user_disabled"
    USER_DELETED = "user_deleted"
    ROLE_CHANGED = "role_changed"
    MEMBERSHIP_REMOVED = "membership_removed"
    FACILITIES_ASSIGNED = "facilities_assigned"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"
    PASSWORD_RESET_ISSUED = "password_reset_issued"
    PASSWORD_RESET_FAILED = "password_reset_failed"
    TOKEN_CREATED = "token_created"
    TOKEN_REVOKED = "token_revoked"


AuditValue = str | int | float | bool | None


class AuditRecord(_Record):
    """Who did what to which target, when and from where. ``audit_id`` is given by the store
    (increasing); ``actor_id`` is a user id or another principal (``cli``, a token's
    subject), none for an unknown account's failed sign-in."""

    audit_id: int | None = None
    at: UtcDatetime
    actor_id: str | None = Field(default=None, max_length=200)
    action: AuditAction
    organisation_id: Identifier | None = None
    target: str | None = Field(default=None, max_length=300,
                               description="what was acted on, e.g. user:u-2, session")
    client_address: ClientAddress | None = None
    details: dict[str, AuditValue] = Field(default_factory=dict, max_length=32)


class PersonalToken(_Record):
    """A script's credential, made by a user for themselves: at most the owner's role in the
    organisation (checked when it is added, and again, against the owner's role then, when
    it is used) and, when ``facility_ids`` is given, at most those of the owner's facilities."""

    token_id: TokenId
    user_id: Identifier
    organisation_id: Identifier
    token_sha256: Digest
    name: DisplayName
    role: PersonRole
    facility_ids: tuple[Identifier, ...] | None = None
    created_at: UtcDatetime
    expires_at: UtcDatetime
    revoked_at: UtcDatetime | None = None

    def active(self, now: datetime) -> bool:
        return (self.revoked_at is None or self.revoked_at > now) and now < self.expires_at


class SignInFailures(_Record):
    """Failed sign-ins of one account (a normalised email, known or not) since its last
    success or the last time an admin cleared them: what lock-out is decided from."""

    account: str = Field(min_length=1, max_length=EMAIL_MAX_LENGTH)
    failures: int = Field(ge=1)
    first_failed_at: UtcDatetime
    last_failed_at: UtcDatetime


class PasswordReset(_Record):
    """A one-time password-reset token issued to a user (by an admin, or at the CLI): only
    its SHA-256 is stored; it sets a new password once, before ``expires_at``."""

    token_sha256: Digest
    user_id: Identifier
    organisation_id: Identifier | None = None
    """The organisation it was issued in (its audit records go there); none: at the CLI."""
    created_at: UtcDatetime
    expires_at: UtcDatetime
    created_by: str = Field(max_length=200, description="who issued it (a user id, cli)")
    used_at: UtcDatetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.used_at is None and now < self.expires_at
