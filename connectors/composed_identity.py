"""The identity area of the relational stores (``IdentityStore``), forwarded method by method
to its adapter as ``connectors.composed`` does for the other areas (kept apart for its size);
``RelationalAreas`` is one of these."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from schemas.identity import (
    AuditAction,
    AuditRecord,
    Membership,
    Organisation,
    PasswordReset,
    PersonalToken,
    PersonRole,
    SignInFailures,
    User,
    UserStatus,
)
from tables.ports.identity import Audits, IdentityStore


class IdentityArea:
    def __init__(self, *, identity: IdentityStore) -> None:
        self.identity = identity

    async def add_organisation(self, organisation: Organisation, *,
                               audit: AuditRecord | None = None) -> None:
        await self.identity.add_organisation(organisation, audit=audit)

    async def update_organisation(self, organisation: Organisation, *,
                                  audit: AuditRecord | None = None) -> None:
        await self.identity.update_organisation(organisation, audit=audit)

    async def delete_organisation(self, organisation_id: str, *,
                                  audit: AuditRecord | None = None) -> None:
        await self.identity.delete_organisation(organisation_id, audit=audit)

    async def organisation(self, organisation_id: str) -> Organisation | None:
        return await self.identity.organisation(organisation_id)

    async def organisations(self) -> list[Organisation]:
        return await self.identity.organisations()

    async def set_facility_organisation(self, facility_id: str, organisation_id: str, *,
                                        audit: AuditRecord | None = None) -> None:
        await self.identity.set_facility_organisation(facility_id, organisation_id,
                                                      audit=audit)

    async def facility_organisation(self, facility_id: str) -> str | None:
        return await self.identity.facility_organisation(facility_id)

    async def organisation_facilities(self, organisation_id: str) -> list[str]:
        return await self.identity.organisation_facilities(organisation_id)

    async def add_user(self, user: User, *, audit: AuditRecord | None = None) -> None:
        await self.identity.add_user(user, audit=audit)

    async def update_user(self, user: User, *, audit: AuditRecord | None = None) -> None:
        await self.identity.update_user(user, audit=audit)

    async def set_user_status(self, user_id: str, status: UserStatus, *,
                              audit: Audits = None) -> bool:
        return await self.identity.set_user_status(user_id, status, audit=audit)

    async def set_password_hash(self, user_id: str, password_hash: str | None, *,
                                audit: Audits = None) -> None:
        await self.identity.set_password_hash(user_id, password_hash, audit=audit)

    async def delete_user(self, user_id: str, *, audit: Audits = None) -> None:
        await self.identity.delete_user(user_id, audit=audit)

    async def user(self, user_id: str) -> User | None:
        return await self.identity.user(user_id)

    async def user_by_email(self, email: str) -> User | None:
        return await self.identity.user_by_email(email)

    async def user_by_oidc(self, issuer: str, subject: str) -> User | None:
        return await self.identity.user_by_oidc(issuer, subject)

    async def users(self, *, organisation_id: str | None = None) -> list[User]:
        return await self.identity.users(organisation_id=organisation_id)

    async def set_membership(self, user_id: str, organisation_id: str, role: PersonRole, *,
                             audit: AuditRecord | None = None) -> None:
        await self.identity.set_membership(user_id, organisation_id, role, audit=audit)

    async def remove_membership(self, user_id: str, organisation_id: str, *,
                                audit: Audits = None) -> None:
        await self.identity.remove_membership(user_id, organisation_id, audit=audit)

    async def membership(self, user_id: str, organisation_id: str) -> Membership | None:
        return await self.identity.membership(user_id, organisation_id)

    async def memberships(self, *, user_id: str | None = None,
                          organisation_id: str | None = None) -> list[Membership]:
        return await self.identity.memberships(user_id=user_id,
                                               organisation_id=organisation_id)

    async def set_assignments(self, user_id: str, organisation_id: str,
                              facility_ids: Sequence[str], *,
                              audit: AuditRecord | None = None) -> None:
        await self.identity.set_assignments(user_id, organisation_id, facility_ids,
                                            audit=audit)

    async def append_audit(self, record: AuditRecord) -> int:
        return await self.identity.append_audit(record)

    async def audit(self, *, organisation_id: str | None = None, actor_id: str | None = None,
                    target: str | None = None, actions: Sequence[AuditAction] = (),
                    since: datetime | None = None, until: datetime | None = None,
                    before_id: int | None = None, limit: int = 100) -> list[AuditRecord]:
        return await self.identity.audit(organisation_id=organisation_id, actor_id=actor_id,
                                         target=target, actions=actions, since=since,
                                         until=until, before_id=before_id, limit=limit)

    async def add_personal_token(self, token: PersonalToken, *,
                                 audit: AuditRecord | None = None) -> None:
        await self.identity.add_personal_token(token, audit=audit)

    async def personal_token(self, token_id: str) -> PersonalToken | None:
        return await self.identity.personal_token(token_id)

    async def personal_tokens(self, user_id: str) -> list[PersonalToken]:
        return await self.identity.personal_tokens(user_id)

    async def revoke_personal_token(self, token_id: str, *, at: datetime,
                                    audit: AuditRecord | None = None) -> bool:
        return await self.identity.revoke_personal_token(token_id, at=at, audit=audit)

    async def record_sign_in_failure(self, account: str, *, at: datetime,
                                     audit: AuditRecord | None = None) -> SignInFailures:
        return await self.identity.record_sign_in_failure(account, at=at, audit=audit)

    async def record_sign_in_success(self, user_id: str, account: str, *, at: datetime,
                                     audit: AuditRecord | None = None) -> None:
        await self.identity.record_sign_in_success(user_id, account, at=at, audit=audit)

    async def clear_sign_in_failures(self, account: str, *,
                                     audit: AuditRecord | None = None) -> bool:
        return await self.identity.clear_sign_in_failures(account, audit=audit)

    async def sign_in_failures(self, account: str) -> SignInFailures | None:
        return await self.identity.sign_in_failures(account)

    async def add_password_reset(self, reset: PasswordReset, *,
                                 audit: AuditRecord | None = None) -> None:
        await self.identity.add_password_reset(reset, audit=audit)

    async def password_reset(self, token_sha256: str) -> PasswordReset | None:
        return await self.identity.password_reset(token_sha256)

    async def use_password_reset(self, token_sha256: str, password_hash: str, *,
                                 at: datetime, audit: AuditRecord | None = None) -> str:
        return await self.identity.use_password_reset(token_sha256, password_hash, at=at,
                                                      audit=audit)
