"""The identity ports (issue 16): people, organisations, roles and assignments, the audit log,
personal tokens and sign-in failures (``IdentityStore``: SQLite, PostgreSQL), and signed-in
sessions (``SessionStore``: SQLite, Redis).

Every change is one transaction: it happens whole or not at all, and a change that takes an
``audit`` record appends it in that same transaction. The rules the stores keep, whatever
the caller: an email is one account's (case-insensitively: ``schemas.identity.Email`` lower-
cases it); a facility belongs to at most one organisation and is assigned only to members of
that one; an organisation that has an active admin keeps one (no demotion, removal, disabling
or deletion takes its last). Each broken rule is a domain error below, which entrypoints
map to a 4xx; an unreachable server is ``StoreUnavailable`` (503).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, Protocol, TypeAlias

from schemas.identity import (
    AuditAction,
    AuditRecord,
    Membership,
    Organisation,
    PasswordReset,
    PersonalToken,
    PersonRole,
    SessionRecord,
    SignInFailures,
    User,
    UserStatus,
)

Audits: TypeAlias = AuditRecord | Sequence[AuditRecord] | None
"""What a change appends to the audit log in its transaction: one record, or several (one
per organisation of the user a change concerns, so that each organisation's log shows it)."""


def audit_records(audit: Audits) -> tuple[AuditRecord, ...]:
    if audit is None:
        return ()
    return (audit,) if isinstance(audit, AuditRecord) else tuple(audit)


class IdentityError(Exception):
    """A change the identity rules refuse; nothing was written. Not a ``RuntimeError``,
    which the SQLite store's thread hand-over reads as its own shutdown."""


class NotFound(IdentityError):
    """What the change names does not exist (``what``: e.g. ``user u-1``)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} does not exist")
        self.what = what


class Conflict(IdentityError):
    """The change would make a second of something that must be unique."""


class EmailTaken(Conflict):
    def __init__(self, email: str) -> None:
        super().__init__(f"another account already has the email address {email}")
        self.email = email


class LastAdmin(IdentityError):
    """The change would leave an organisation without an active admin."""

    def __init__(self, organisation_id: str) -> None:
        super().__init__(f"organisation {organisation_id} would be left without an active "
                         "admin: make another member admin first")
        self.organisation_id = organisation_id


class WrongOrganisation(IdentityError):
    """Facilities named in a change are not the organisation's."""

    def __init__(self, organisation_id: str, facility_ids: Sequence[str]) -> None:
        super().__init__(f"facilities {', '.join(facility_ids)} do not belong to "
                         f"organisation {organisation_id}")
        self.organisation_id = organisation_id
        self.facility_ids = tuple(facility_ids)


class Invalid(IdentityError, ValueError):
    """A value the stores refuse before any I/O, alike on every backend: a naive datetime, a
    NUL character in a text, a record that is not valid (``connectors/identity_input.py``)."""


class BeyondOwner(IdentityError):
    """A personal token asked for more than its owner has."""


def check_personal_token(token: PersonalToken, role: PersonRole | None,
                allowed_facility_ids: set[str]) -> None:
    """What ``add_personal_token`` refuses, given the owner's role in the token's
    organisation (none: not a member) and the facilities the owner may see there:
    ``NotFound`` for a non-member, ``BeyondOwner`` for more than the owner has (the
    adapters call this inside their transaction)."""
    if role is None:
        raise NotFound(f"membership of user {token.user_id} in {token.organisation_id}")
    if token.role.rank > role.rank:
        raise BeyondOwner(f"a personal token has at most its owner's role ({role.value})")
    if token.facility_ids is not None and (
            beyond := sorted(set(token.facility_ids) - allowed_facility_ids)):
        raise BeyondOwner(f"a personal token's owner may not see facilities "
                          f"{', '.join(beyond)}")


ResetRefusal = Literal["unknown", "used", "expired", "disabled"]


class ResetTokenRefused(IdentityError):
    """A password-reset token that sets no password (``reason``): unknown (or replaced by a
    newer one), used already, expired, or its user is disabled."""

    def __init__(self, reason: ResetRefusal) -> None:
        super().__init__({
            "unknown": "this password-reset token is not valid (or a newer one replaced it)",
            "used": "this password-reset token has been used already; ask for a new one",
            "expired": "this password-reset token has expired; ask for a new one",
            "disabled": "this account is disabled; an admin must re-enable it first",
        }[reason])
        self.reason = reason


def check_password_reset(reset: PasswordReset | None, user_status: str | None, *,
                         at: datetime) -> PasswordReset:
    """What ``use_password_reset`` refuses (``ResetTokenRefused``), given the reset and its
    user's status (none: no such user); the adapters call this inside their transaction."""
    if reset is None or user_status is None:
        raise ResetTokenRefused("unknown")
    if reset.used_at is not None:
        raise ResetTokenRefused("used")
    if at >= reset.expires_at:
        raise ResetTokenRefused("expired")
    if user_status != "active":
        raise ResetTokenRefused("disabled")
    return reset


class IdentityStore(Protocol):
    """Organisations, users, memberships, facility assignments, audit log, personal tokens
    and sign-in failure counts (``schemas/identity.py``). Lists are in id order unless said
    otherwise."""

    # -- organisations and their facilities ---------------------------------------------

    async def add_organisation(self, organisation: Organisation, *,
                               audit: AuditRecord | None = None) -> None:
        """``Conflict`` when the id is taken."""
        ...

    async def update_organisation(self, organisation: Organisation, *,
                                  audit: AuditRecord | None = None) -> None:
        """``NotFound`` when there is none of that id."""
        ...

    async def delete_organisation(self, organisation_id: str, *,
                                  audit: AuditRecord | None = None) -> None:
        """``NotFound``; ``Conflict`` while it has members or facilities."""
        ...

    async def organisation(self, organisation_id: str) -> Organisation | None: ...

    async def organisations(self) -> list[Organisation]: ...

    async def set_facility_organisation(self, facility_id: str, organisation_id: str, *,
                                        audit: AuditRecord | None = None) -> None:
        """The facility (registered, ``NotFound`` otherwise) now belongs to the organisation
        (``NotFound``); moved from another, its assignments there are removed."""
        ...

    async def facility_organisation(self, facility_id: str) -> str | None: ...

    async def organisation_facilities(self, organisation_id: str) -> list[str]: ...

    # -- users ---------------------------------------------------------------------------

    async def add_user(self, user: User, *, audit: AuditRecord | None = None) -> None:
        """``EmailTaken``; ``Conflict`` when the id or the OIDC identity is taken."""
        ...

    async def update_user(self, user: User, *, audit: AuditRecord | None = None) -> None:
        """Replaces email, display name, status and OIDC identity (``NotFound``,
        ``EmailTaken``, ``Conflict``; ``LastAdmin`` when disabling an organisation's last
        active admin). The password hash and last sign-in have methods of their own, so
        an edit does not undo a concurrent sign-in or password change."""
        ...

    async def set_user_status(self, user_id: str, status: UserStatus, *,
                              audit: Audits = None) -> bool:
        """Whether the status changed: only the status is written, so a concurrent edit of
        the user's other fields stays (``NotFound``; ``LastAdmin`` when disabling an
        organisation's last active admin). The audit records are written only on a change."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str | None, *,
                                audit: Audits = None) -> None:
        """``NotFound``."""
        ...

    async def delete_user(self, user_id: str, *, audit: Audits = None) -> None:
        """With the memberships, assignments, tokens of the user (``NotFound``,
        ``LastAdmin``). The audit log keeps what they did."""
        ...

    async def user(self, user_id: str) -> User | None: ...

    async def user_by_email(self, email: str) -> User | None:
        """Case-insensitive: the address is normalised first."""
        ...

    async def user_by_oidc(self, issuer: str, subject: str) -> User | None: ...

    async def users(self, *, organisation_id: str | None = None) -> list[User]:
        """Every user, or the members of one organisation."""
        ...

    # -- memberships and assignments -----------------------------------------------------

    async def set_membership(self, user_id: str, organisation_id: str, role: PersonRole, *,
                             audit: AuditRecord | None = None) -> None:
        """Adds the user to the organisation or changes their role there (``NotFound``,
        ``LastAdmin``). A new member has no facilities assigned."""
        ...

    async def remove_membership(self, user_id: str, organisation_id: str, *,
                                audit: Audits = None) -> None:
        """With the member's assignments and tokens there (``NotFound``, ``LastAdmin``)."""
        ...

    async def membership(self, user_id: str, organisation_id: str) -> Membership | None: ...

    async def memberships(self, *, user_id: str | None = None,
                          organisation_id: str | None = None) -> list[Membership]:
        """In (organisation, user) order."""
        ...

    async def set_assignments(self, user_id: str, organisation_id: str,
                              facility_ids: Sequence[str], *,
                              audit: AuditRecord | None = None) -> None:
        """Replaces the member's facilities (``NotFound`` for a non-member,
        ``WrongOrganisation`` naming those that are not the organisation's)."""
        ...

    # -- audit log -----------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord) -> int:
        """Its ``audit_id`` (the record's own is ignored): increasing."""
        ...

    async def audit(self, *, organisation_id: str | None = None, actor_id: str | None = None,
                    target: str | None = None, actions: Sequence[AuditAction] = (),
                    since: datetime | None = None, until: datetime | None = None,
                    before_id: int | None = None, limit: int = 100) -> list[AuditRecord]:
        """Newest first (``audit_id`` descending); each filter given narrows it
        (``since <= at < until``); ``before_id`` pages on."""
        ...

    # -- personal tokens -----------------------------------------------------------------

    async def add_personal_token(self, token: PersonalToken, *,
                                 audit: AuditRecord | None = None) -> None:
        """``NotFound`` unless the owner is a member of the token's organisation;
        ``BeyondOwner`` for a role above theirs or a facility they are not assigned (of the
        organisation-wide roles: not the organisation's); ``Conflict`` on a taken id."""
        ...

    async def personal_token(self, token_id: str) -> PersonalToken | None: ...

    async def personal_tokens(self, user_id: str) -> list[PersonalToken]:
        """Newest first."""
        ...

    async def revoke_personal_token(self, token_id: str, *, at: datetime,
                                    audit: AuditRecord | None = None) -> bool:
        """Whether a token that was not revoked is now (the audit record only then)."""
        ...

    # -- sign-in failures ----------------------------------------------------------------

    async def record_sign_in_failure(self, account: str, *, at: datetime,
                                     audit: AuditRecord | None = None) -> SignInFailures:
        """One more failure of ``account``; the count after it. The account is keyed by
        ``schemas.identity.account_key`` (the email normalised; another text lower-cased and
        cut to ``EMAIL_MAX_LENGTH``); failures older than ``SIGN_IN_FAILURE_WINDOW`` before
        this one no longer count (the count starts again at 1)."""
        ...

    async def record_sign_in_success(self, user_id: str, account: str, *, at: datetime,
                                     audit: AuditRecord | None = None) -> None:
        """The user's last sign-in is ``at`` and the account's failures are cleared
        (``NotFound``)."""
        ...

    async def clear_sign_in_failures(self, account: str, *,
                                     audit: AuditRecord | None = None) -> bool:
        """An admin lifts a lock-out: whether there were failures (the audit record only
        then)."""
        ...

    async def sign_in_failures(self, account: str) -> SignInFailures | None: ...

    # -- password resets -----------------------------------------------------------------

    async def add_password_reset(self, reset: PasswordReset, *,
                                 audit: AuditRecord | None = None) -> None:
        """A new one-time token for the user, replacing their unused ones (only the newest
        works): ``NotFound`` for an unknown user, ``Conflict`` on a taken digest."""
        ...

    async def password_reset(self, token_sha256: str) -> PasswordReset | None: ...

    async def use_password_reset(self, token_sha256: str, password_hash: str, *,
                                 at: datetime, audit: AuditRecord | None = None) -> str:
        """Marks the token used and sets its user's password hash, in one transaction: the
        user's id. ``ResetTokenRefused`` (nothing written) unless the token is known, unused,
        unexpired at ``at``, and its user active (``check_password_reset``), so that of two
        concurrent uses exactly one succeeds."""
        ...


class SessionStore(Protocol):
    """Signed-in sessions by the SHA-256 digest of their id. Expiry is decided by the
    ``now`` each call is given (idle: ``last_seen_at + idle_timeout_s``; absolute:
    ``absolute_expires_at``), never by the server's clock, so that every adapter answers
    alike; adapters may forget a session once it has expired by their own clock too."""

    async def create(self, session: SessionRecord) -> None:
        """``Conflict`` when the digest is taken (a new id at every sign-in)."""
        ...

    async def get(self, session_sha256: str, *, now: datetime) -> SessionRecord | None:
        """The live session, its ``last_seen_at`` moved to ``now`` (which restarts its idle
        time); none when unknown, revoked or expired."""
        ...

    async def revoke(self, session_sha256: str, *, at: datetime) -> bool:
        """Whether a live session is now revoked (sign-out; an admin's revocation)."""
        ...

    async def revoke_all(self, user_id: str, *, at: datetime,
                         keep_sha256: str | None = None) -> int:
        """Revokes every live session of the user but ``keep_sha256`` ("sign out
        everywhere else"; a disabled user's, with none kept): how many."""
        ...

    async def sessions_of(self, user_id: str, *, now: datetime) -> list[SessionRecord]:
        """The user's live sessions, newest first."""
        ...

    async def all_sessions(self, *, now: datetime,
                           organisation_id: str | None = None) -> list[SessionRecord]:
        """Every live session (of one organisation), newest first: an admin's view."""
        ...

    async def expire(self, *, now: datetime) -> int:
        """Forgets the sessions expired or revoked at ``now``: how many."""
        ...
