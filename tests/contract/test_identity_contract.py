"""People (issue 16): the same behaviour in SQLite and in PostgreSQL (alone and in the
production store): one account per email whatever its case, an organisation keeps an active
admin, assignments stay within the organisation, each change is whole with its audit record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.identity import (
    AuditAction,
    AuditRecord,
    Organisation,
    PersonalToken,
    PersonRole,
    User,
    sha256_hex,
)
from schemas.metadata import Facility
from tables.ports.identity import (
    BeyondOwner,
    Conflict,
    EmailTaken,
    LastAdmin,
    NotFound,
    WrongOrganisation,
)
from tests.contract.adapters import RelationalStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)  # microseconds survive every adapter


@pytest.fixture
def store(relational: RelationalStore) -> RelationalStore:
    """Every adapter of the port: SQLite, PostgreSQL, InfluxDB + PostgreSQL (conftest.py)."""
    return relational


def user(user_id: str, email: str, **update: object) -> User:
    return User.model_validate({"user_id": user_id, "email": email,
                                "display_name": user_id.title(), "created_at": T0, **update})


def audit(action: AuditAction, target: str, *, org: str | None = "org-1",
          at: datetime = T0) -> AuditRecord:
    return AuditRecord(at=at, actor_id="u-admin", action=action, organisation_id=org,
                       target=target, client_address="192.0.2.7", details={"n": 1})


async def two_organisations(store: RelationalStore) -> None:
    """org-1 with fac-a and fac-c, org-2 with fac-b; u-admin admin of org-1."""
    await store.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                                   for f in ("fac-a", "fac-b", "fac-c")])
    for org in ("org-1", "org-2"):
        await store.add_organisation(Organisation(organisation_id=org, name=org.upper()))
    for facility, org in (("fac-a", "org-1"), ("fac-b", "org-2"), ("fac-c", "org-1")):
        await store.set_facility_organisation(facility, org)
    await store.add_user(user("u-admin", "admin@example.com"))
    await store.set_membership("u-admin", "org-1", PersonRole.ADMIN)


async def test_organisations_are_added_listed_renamed_and_deleted_when_empty(
    store: RelationalStore,
) -> None:
    await two_organisations(store)
    with pytest.raises(Conflict):
        await store.add_organisation(Organisation(organisation_id="org-1", name="Again"))
    await store.update_organisation(Organisation(organisation_id="org-2", name="Renamed"))
    assert await store.organisations() == [Organisation(organisation_id="org-1", name="ORG-1"),
                                           Organisation(organisation_id="org-2", name="Renamed")]
    with pytest.raises(NotFound):
        await store.update_organisation(Organisation(organisation_id="nope", name="N"))
    assert await store.organisation_facilities("org-1") == ["fac-a", "fac-c"]
    assert await store.facility_organisation("fac-b") == "org-2"
    assert await store.facility_organisation("fac-z") is None
    with pytest.raises(Conflict, match="members or facilities"):
        await store.delete_organisation("org-2")  # fac-b is its
    await store.add_organisation(Organisation(organisation_id="org-3", name="Empty"))
    await store.delete_organisation("org-3")
    assert await store.organisation("org-3") is None
    with pytest.raises(NotFound):
        await store.set_facility_organisation("fac-z", "org-1")  # not registered
    with pytest.raises(NotFound):
        await store.set_facility_organisation("fac-a", "org-9")


async def test_an_email_is_one_accounts_whatever_its_case(store: RelationalStore) -> None:
    await two_organisations(store)
    await store.add_user(user("u-1", "  Alice.Smith@Example.COM "))
    found = await store.user_by_email("ALICE.SMITH@example.com")
    assert found is not None and found.user_id == "u-1"
    assert found.email == "alice.smith@example.com"
    assert await store.user_by_email("not an email") is None

    with pytest.raises(EmailTaken):
        await store.add_user(user("u-2", "alice.smith@EXAMPLE.com"),
                             audit=audit(AuditAction.USER_CREATED, "user:u-2"))
    assert await store.user("u-2") is None
    assert await store.audit() == []  # the refused change wrote no audit record either
    await store.add_user(user("u-2", "bob@example.com"))
    with pytest.raises(EmailTaken):
        await store.update_user(user("u-2", "Alice.Smith@example.com"))
    with pytest.raises(Conflict):
        await store.add_user(user("u-1", "other@example.com"))  # the id is taken
    assert [u.user_id for u in await store.users()] == ["u-1", "u-2", "u-admin"]


async def test_a_user_round_trips_and_edits_leave_password_and_sign_in_alone(
    store: RelationalStore,
) -> None:
    await two_organisations(store)
    alice = user("u-1", "alice@example.com", password_hash="$argon2id$v=19$m=8,t=1,p=1$x$y",
                 oidc_issuer="https://idp.example", oidc_subject="sub-1")
    await store.add_user(alice)
    assert await store.user("u-1") == alice
    assert await store.user_by_oidc("https://idp.example", "sub-1") == alice
    with pytest.raises(Conflict, match="OIDC"):
        await store.add_user(user("u-2", "b@example.com", oidc_issuer="https://idp.example",
                                  oidc_subject="sub-1"))

    await store.record_sign_in_success("u-1", "alice@example.com",
                                       at=T0 + timedelta(minutes=1))
    await store.update_user(alice.model_copy(update={"display_name": "Alice S.",
                                                     "password_hash": None}))
    edited = await store.user("u-1")
    assert edited is not None and edited.display_name == "Alice S."
    assert edited.password_hash == alice.password_hash  # not the edit's to change
    assert edited.last_sign_in_at == T0 + timedelta(minutes=1)
    await store.set_password_hash("u-1", None)
    cleared = await store.user("u-1")
    assert cleared is not None and cleared.password_hash is None
    with pytest.raises(NotFound):
        await store.set_password_hash("u-9", None)


async def test_the_last_active_admin_cannot_be_demoted_removed_disabled_or_deleted(
    store: RelationalStore,
) -> None:
    await two_organisations(store)
    admin = await store.user("u-admin")
    assert admin is not None
    refused = [
        store.set_membership("u-admin", "org-1", PersonRole.ENERGY_MANAGER,
                             audit=audit(AuditAction.ROLE_CHANGED, "user:u-admin")),
        store.remove_membership("u-admin", "org-1"),
        store.update_user(admin.model_copy(update={"status": "disabled"})),
        store.delete_user("u-admin"),
    ]
    for change in refused:
        with pytest.raises(LastAdmin) as caught:
            await change
        assert caught.value.organisation_id == "org-1"
    membership = await store.membership("u-admin", "org-1")
    assert membership is not None and membership.role is PersonRole.ADMIN
    assert (await store.user("u-admin")) == admin
    assert await store.audit() == []

    # A disabled admin does not count; an active second admin does.
    await store.add_user(user("u-2", "second@example.com", status="disabled"))
    await store.set_membership("u-2", "org-1", PersonRole.ADMIN)
    with pytest.raises(LastAdmin):
        await store.set_membership("u-admin", "org-1", PersonRole.VIEWER)
    second = await store.user("u-2")
    assert second is not None
    await store.update_user(second.model_copy(update={"status": "active"}))
    await store.set_membership("u-admin", "org-1", PersonRole.VIEWER)
    with pytest.raises(LastAdmin):
        await store.update_user(second.model_copy(update={"status": "disabled"}))
    # An organisation that never had an admin may take members of any role.
    await store.set_membership("u-admin", "org-2", PersonRole.VIEWER)
    await store.remove_membership("u-admin", "org-2")
    with pytest.raises(NotFound):
        await store.set_membership("u-9", "org-1", PersonRole.VIEWER)
    with pytest.raises(NotFound):
        await store.set_membership("u-admin", "org-9", PersonRole.VIEWER)


async def test_assignments_stay_within_the_members_organisation(store: RelationalStore) -> None:
    await two_organisations(store)
    await store.add_user(user("u-1", "op@example.com"))
    await store.set_membership("u-1", "org-1", PersonRole.OPERATOR)
    await store.set_assignments("u-1", "org-1", ["fac-c", "fac-a", "fac-a"],
                                audit=audit(AuditAction.FACILITIES_ASSIGNED, "user:u-1"))
    with pytest.raises(WrongOrganisation) as caught:
        await store.set_assignments("u-1", "org-1", ["fac-a", "fac-b", "fac-z"])
    assert caught.value.facility_ids == ("fac-b", "fac-z")
    membership = await store.membership("u-1", "org-1")
    assert membership is not None and membership.facility_ids == ("fac-a", "fac-c")
    with pytest.raises(NotFound):
        await store.set_assignments("u-1", "org-2", ["fac-b"])  # not a member there

    # A facility moved to another organisation leaves its old members' assignments.
    await store.set_facility_organisation("fac-c", "org-2")
    membership = await store.membership("u-1", "org-1")
    assert membership is not None and membership.facility_ids == ("fac-a",)
    assert [(m.user_id, m.organisation_id) for m in await store.memberships()] == [
        ("u-1", "org-1"), ("u-admin", "org-1")]
    assert [u.user_id for u in await store.users(organisation_id="org-1")] == [
        "u-1", "u-admin"]
    assert await store.users(organisation_id="org-2") == []
    [record] = await store.audit()
    assert (record.action, record.target, record.details) == (
        AuditAction.FACILITIES_ASSIGNED, "user:u-1", {"n": 1})

    await store.remove_membership("u-1", "org-1")
    assert await store.membership("u-1", "org-1") is None
    await store.set_membership("u-1", "org-1", PersonRole.OPERATOR)  # back, with nothing
    membership = await store.membership("u-1", "org-1")
    assert membership is not None and membership.facility_ids == ()


async def test_the_audit_log_is_newest_first_filtered_and_paged(store: RelationalStore) -> None:
    ids = [await store.append_audit(audit(action, target, org=org, at=T0 + timedelta(seconds=s)))
           for s, (action, target, org) in enumerate([
               (AuditAction.SIGN_IN, "session", "org-1"),
               (AuditAction.ROLE_CHANGED, "user:u-2", "org-1"),
               (AuditAction.SIGN_IN_FAILED, "account", None),
               (AuditAction.SIGN_IN, "session", "org-2")])]
    assert ids == sorted(ids)
    everything = await store.audit()
    assert [r.audit_id for r in everything] == ids[::-1]
    assert everything[-1] == audit(AuditAction.SIGN_IN, "session").model_copy(
        update={"audit_id": ids[0]})
    assert [r.audit_id for r in await store.audit(organisation_id="org-1")] == ids[1::-1]
    assert [r.audit_id for r in await store.audit(actions=[AuditAction.SIGN_IN])] == [
        ids[3], ids[0]]
    assert [r.audit_id for r in await store.audit(target="user:u-2")] == [ids[1]]
    assert [r.audit_id for r in await store.audit(
        since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=3))] == [ids[2], ids[1]]
    assert [r.audit_id for r in await store.audit(limit=2)] == [ids[3], ids[2]]
    assert [r.audit_id for r in await store.audit(before_id=ids[2], limit=2)] == [
        ids[1], ids[0]]
    assert await store.audit(actor_id="someone else") == []


async def test_personal_tokens_are_at_most_their_owners_rights(store: RelationalStore) -> None:
    await two_organisations(store)
    await store.add_user(user("u-1", "fm@example.com"))
    await store.set_membership("u-1", "org-1", PersonRole.FACILITY_MANAGER)
    await store.set_assignments("u-1", "org-1", ["fac-a"])

    def token(token_id: str, role: PersonRole, facilities: tuple[str, ...] | None,
              minutes: int = 0, owner: str = "u-1") -> PersonalToken:
        return PersonalToken(token_id=token_id, user_id=owner, organisation_id="org-1",
                             token_sha256=sha256_hex(token_id), name=f"script {token_id}",
                             role=role, facility_ids=facilities,
                             created_at=T0 + timedelta(minutes=minutes),
                             expires_at=T0 + timedelta(days=30))

    first = token("0000000000000001", PersonRole.VIEWER, ("fac-a",))
    second = token("0000000000000002", PersonRole.FACILITY_MANAGER, None, minutes=1)
    await store.add_personal_token(first, audit=audit(AuditAction.TOKEN_CREATED, "token"))
    await store.add_personal_token(second)
    assert await store.personal_token(first.token_id) == first
    assert await store.personal_tokens("u-1") == [second, first]
    for beyond in (token("0000000000000003", PersonRole.ENERGY_MANAGER, None),
                   token("0000000000000003", PersonRole.VIEWER, ("fac-a", "fac-c"))):
        with pytest.raises(BeyondOwner):
            await store.add_personal_token(beyond)
    with pytest.raises(NotFound):
        await store.add_personal_token(token("0000000000000003", PersonRole.VIEWER, None,
                                             owner="u-9"))
    with pytest.raises(Conflict):
        await store.add_personal_token(first)
    # An organisation-wide role's token may name any facility of the organisation.
    await store.add_personal_token(token("0000000000000004", PersonRole.ADMIN, ("fac-c",),
                                         owner="u-admin"))

    assert await store.revoke_personal_token(first.token_id, at=T0 + timedelta(hours=1))
    assert not await store.revoke_personal_token(first.token_id, at=T0 + timedelta(hours=2))
    revoked = await store.personal_token(first.token_id)
    assert revoked is not None and revoked.revoked_at == T0 + timedelta(hours=1)
    assert not revoked.active(T0 + timedelta(hours=1))
    assert await store.personal_token("00000000000000ff") is None
    await store.remove_membership("u-1", "org-1")  # the tokens go with the membership
    assert await store.personal_tokens("u-1") == []


async def test_sign_in_failures_count_until_a_success_or_an_admin_clears_them(
    store: RelationalStore,
) -> None:
    await two_organisations(store)
    account = "admin@example.com"
    assert await store.sign_in_failures(account) is None
    for n in range(1, 4):
        counted = await store.record_sign_in_failure(account, at=T0 + timedelta(seconds=n))
        assert (counted.failures, counted.first_failed_at, counted.last_failed_at) == (
            n, T0 + timedelta(seconds=1), T0 + timedelta(seconds=n))
    assert await store.sign_in_failures(account) == counted
    await store.record_sign_in_success("u-admin", account, at=T0 + timedelta(minutes=1),
                                       audit=audit(AuditAction.SIGN_IN, "session"))
    assert await store.sign_in_failures(account) is None
    signed_in = await store.user("u-admin")
    assert signed_in is not None and signed_in.last_sign_in_at == T0 + timedelta(minutes=1)

    unknown = "nobody@example.com"  # counted like any account: no way to tell it apart
    await store.record_sign_in_failure(unknown, at=T0)
    assert await store.clear_sign_in_failures(unknown)
    assert not await store.clear_sign_in_failures(unknown)
    with pytest.raises(NotFound):
        await store.record_sign_in_success("u-9", unknown, at=T0)


async def test_deleting_a_user_takes_their_memberships_and_tokens(
    store: RelationalStore,
) -> None:
    await two_organisations(store)
    await store.add_user(user("u-1", "v@example.com"))
    await store.set_membership("u-1", "org-1", PersonRole.VIEWER)
    await store.set_assignments("u-1", "org-1", ["fac-a"])
    token = PersonalToken(token_id="00000000000000d1", user_id="u-1", organisation_id="org-1",
                          token_sha256=sha256_hex("d1"), name="script", role=PersonRole.VIEWER,
                          created_at=T0, expires_at=T0 + timedelta(days=30))
    await store.add_personal_token(token)
    await store.delete_user("u-1", audit=audit(AuditAction.USER_DELETED, "user:u-1"))
    assert await store.user("u-1") is None
    assert await store.memberships(user_id="u-1") == []
    assert await store.personal_tokens("u-1") == []
    assert await store.personal_token(token.token_id) is None
    assert [r.action for r in await store.audit()] == [AuditAction.USER_DELETED]
    await store.add_user(user("u-1", "v@example.com"))  # the id and the email are free again
    with pytest.raises(NotFound):
        await store.delete_user("u-9")
