"""People (issue 16), the rules a review found kept unevenly: concurrent changes end as the
rules say (never a deadlock reported as an unavailable store), only the status is written
when a user is disabled, input a backend cannot keep is refused alike everywhere, sign-in
failures are counted under one key per account and forgotten after a quiet period, and an
audit record is written only for a change that happened."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from schemas.identity import (
    EMAIL_MAX_LENGTH,
    SIGN_IN_FAILURE_WINDOW,
    AuditAction,
    Organisation,
    PersonalToken,
    PersonRole,
    sha256_hex,
)
from schemas.metadata import Facility
from tables.ports.identity import Invalid, LastAdmin, NotFound
from tests.contract.adapters import RelationalStore
from tests.contract.test_identity_contract import T0, audit, two_organisations, user

pytestmark = pytest.mark.integration

ROUNDS = 8
"""Each race is run this many times, on fresh rows: a deadlock needs the two transactions
to interleave, which one round may not do."""


@pytest.fixture
def store(relational: RelationalStore) -> RelationalStore:
    return relational


async def admins(store: RelationalStore, n: int, *orgs: str) -> None:
    for org in orgs:
        await store.add_organisation(Organisation(organisation_id=org, name=org))
    for i in range(1, 3):
        await store.add_user(user(f"u{n}-{i}", f"admin{i}.{n}@example.com"))
        for org in orgs:
            await store.set_membership(f"u{n}-{i}", org, PersonRole.ADMIN)


async def test_two_admins_demoting_each_other_in_two_organisations_both_succeed(
    store: RelationalStore,
) -> None:
    for n in range(ROUNDS):
        o1, o2 = f"o{n}-1", f"o{n}-2"
        await admins(store, n, o1, o2)
        # u1 demotes u2 in o1 while u2 demotes u1 in o2: each organisation keeps an admin,
        # and the two lock o1 and o2 in opposite orders unless they lock them sorted.
        await asyncio.gather(store.set_membership(f"u{n}-2", o1, PersonRole.VIEWER),
                             store.set_membership(f"u{n}-1", o2, PersonRole.VIEWER))
        assert [(m.organisation_id, m.user_id, m.role) for m in
                await store.memberships(user_id=f"u{n}-1")] == [
            (o1, f"u{n}-1", PersonRole.ADMIN), (o2, f"u{n}-1", PersonRole.VIEWER)]


async def test_two_last_admins_demoting_each_other_one_gets_last_admin(
    store: RelationalStore,
) -> None:
    for n in range(ROUNDS):
        org = f"o{n}"
        await admins(store, n, org)
        results = await asyncio.gather(
            store.set_membership(f"u{n}-2", org, PersonRole.VIEWER),
            store.set_membership(f"u{n}-1", org, PersonRole.VIEWER), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["LastAdmin", "NoneType"], results
        roles = [m.role for m in await store.memberships(organisation_id=org)]
        assert sorted(roles) == sorted([PersonRole.ADMIN, PersonRole.VIEWER])


async def test_a_token_added_while_its_owner_is_demoted_is_no_deadlock(
    store: RelationalStore,
) -> None:
    for n in range(ROUNDS):
        org = f"o{n}"
        await admins(store, n, org)
        token = PersonalToken(token_id=f"{n:016x}", user_id=f"u{n}-2", organisation_id=org,
                              token_sha256=sha256_hex(str(n)), name="script",
                              role=PersonRole.VIEWER, created_at=T0,
                              expires_at=T0 + timedelta(days=1))
        await asyncio.gather(store.add_personal_token(token),
                             store.set_membership(f"u{n}-2", org, PersonRole.OPERATOR))
        assert await store.personal_token(token.token_id) == token


async def test_disabling_writes_the_status_alone_and_audits_only_a_change(
    store: RelationalStore,
) -> None:
    await two_organisations(store)
    await store.add_user(user("u-1", "one@example.com"))
    await store.set_membership("u-1", "org-1", PersonRole.ADMIN)
    # An edit made since the caller read the user stays: only the status is written.
    await store.update_user(user("u-1", "one@example.com", display_name="Renamed"))
    assert await store.set_user_status(
        "u-1", "disabled", audit=[audit(AuditAction.USER_DISABLED, "user:u-1"),
                                  audit(AuditAction.USER_DISABLED, "user:u-1", org="org-2")])
    disabled = await store.user("u-1")
    assert disabled is not None and (disabled.status, disabled.display_name) == (
        "disabled", "Renamed")
    assert not await store.set_user_status(
        "u-1", "disabled", audit=audit(AuditAction.USER_DISABLED, "user:u-1"))
    assert [r.organisation_id for r in await store.audit()] == ["org-2", "org-1"]
    with pytest.raises(LastAdmin):
        await store.set_user_status("u-admin", "disabled")
    with pytest.raises(NotFound):
        await store.set_user_status("u-9", "disabled")
    assert await store.set_user_status("u-1", "active")


async def test_audit_records_are_written_only_for_a_change(store: RelationalStore) -> None:
    await two_organisations(store)
    await store.add_user(user("u-1", "one@example.com"))
    await store.set_membership("u-1", "org-1", PersonRole.VIEWER)
    token = PersonalToken(token_id="00000000000000aa", user_id="u-1", organisation_id="org-1",
                          token_sha256=sha256_hex("t"), name="script", role=PersonRole.VIEWER,
                          created_at=T0, expires_at=T0 + timedelta(days=1))
    await store.add_personal_token(token)
    revoked = audit(AuditAction.TOKEN_REVOKED, "token")
    assert await store.revoke_personal_token(token.token_id, at=T0, audit=revoked)
    assert not await store.revoke_personal_token(token.token_id, at=T0, audit=revoked)
    cleared = audit(AuditAction.LOCKOUT_CLEARED, "account")
    assert not await store.clear_sign_in_failures("nobody@example.com", audit=cleared)
    assert [r.action for r in await store.audit()] == [AuditAction.TOKEN_REVOKED]


async def test_sign_in_failures_share_one_key_per_account_and_end_after_a_quiet_period(
    store: RelationalStore,
) -> None:
    await store.record_sign_in_failure("Alice@Example.com ", at=T0)
    counted = await store.record_sign_in_failure("alice@example.COM",
                                                 at=T0 + timedelta(seconds=1))
    assert (counted.account, counted.failures) == ("alice@example.com", 2)
    assert await store.sign_in_failures("ALICE@example.com") == counted
    # A quiet period after the last failure: the next one starts the count again.
    quiet = counted.last_failed_at + SIGN_IN_FAILURE_WINDOW
    again = await store.record_sign_in_failure("alice@example.com", at=quiet)
    assert (again.failures, again.first_failed_at) == (1, quiet)
    # Not an email, and too long for one: counted under its first 254 characters.
    long = await store.record_sign_in_failure("X" * 10_000, at=T0)
    assert long.account == "x" * EMAIL_MAX_LENGTH
    with pytest.raises(Invalid):
        await store.record_sign_in_failure("   ", at=T0)
    await two_organisations(store)
    await store.record_sign_in_failure("Admin@Example.com", at=T0)
    await store.record_sign_in_success("u-admin", "ADMIN@example.com", at=T0)
    assert await store.sign_in_failures("admin@example.com") is None


async def test_input_no_backend_can_keep_alike_is_refused_alike(store: RelationalStore) -> None:
    await two_organisations(store)
    naive = datetime(2026, 3, 1, 12, 0)
    with pytest.raises(ValueError, match="naive"):
        await store.record_sign_in_failure("a@example.com", at=naive)
    with pytest.raises(ValueError, match="naive"):
        await store.revoke_personal_token("0000000000000001", at=naive)
    # model_copy skips validation: the store validates again.
    admin = await store.user("u-admin")
    assert admin is not None
    await store.update_user(admin.model_copy(update={"email": "Mixed.Case@Example.com"}))
    assert (await store.user_by_email("mixed.case@example.com")) is not None
    with pytest.raises(Invalid, match="status"):
        await store.update_user(admin.model_copy(update={"status": "gone"}))
    for change in (store.add_user(user("u-1", "n@example.com", oidc_issuer="https://i\x00",
                                       oidc_subject="s")),
                   store.user("u\x00"),
                   store.record_sign_in_failure("a\x00@example.com", at=T0),
                   store.append_audit(audit(AuditAction.SIGN_IN, "session\x00")),
                   store.set_membership("u-admin", "org\x00", PersonRole.VIEWER)):
        with pytest.raises(Invalid, match="NUL"):
            await change
    assert [u.user_id for u in await store.users()] == ["u-admin"]
    assert await store.audit() == []


async def test_an_aware_time_in_any_offset_is_kept_as_the_same_instant(
    store: RelationalStore,
) -> None:
    await two_organisations(store)
    east = T0.astimezone(timezone(timedelta(hours=5, minutes=30)))
    await store.add_user(user("u-1", "e@example.com", created_at=east))
    kept = await store.user("u-1")
    assert kept is not None and kept.created_at == T0 and kept.created_at.utcoffset() == \
        timedelta(0)
    await store.record_sign_in_failure("e@example.com", at=east)
    failures = await store.sign_in_failures("e@example.com")
    assert failures is not None and failures.first_failed_at == T0


async def test_a_facility_moved_while_assigned_ends_as_the_rules_say(
    store: RelationalStore,
) -> None:
    await two_organisations(store)
    await store.add_user(user("u-1", "op@example.com"))
    await store.set_membership("u-1", "org-1", PersonRole.OPERATOR)
    for n in range(ROUNDS):
        facility = f"fac-m{n}"
        await store.upsert_facilities([Facility(facility_id=facility, name="m",
                                                contract_demand_kw=1)])
        await store.set_facility_organisation(facility, "org-1")
        # The move removes org-1's assignments of it; an assignment racing it either comes
        # first (and is removed) or after (WrongOrganisation): never a driver's exception.
        results = await asyncio.gather(
            store.set_facility_organisation(facility, "org-2"),
            store.set_assignments("u-1", "org-1", [facility]), return_exceptions=True)
        assert results[0] is None, repr(results[0])
        assert results[1] is None or type(results[1]).__name__ == "WrongOrganisation", \
            repr(results[1])
        membership = await store.membership("u-1", "org-1")
        assert membership is not None and membership.facility_ids == ()
        assert await store.facility_organisation(facility) == "org-2"
