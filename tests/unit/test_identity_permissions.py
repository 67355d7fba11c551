"""Who sees which facilities and may do what (agents/identity/permissions.py), worked out by
hand from the roles of issue 16."""

from __future__ import annotations

import pytest

from agents.identity.permissions import Action, grants, may_grant, narrowed
from schemas.identity import PersonRole

pytestmark = pytest.mark.unit

ORG = ("fac-a", "fac-b", "fac-c")  # the organisation's facilities
ASSIGNED = ("fac-a", "fac-x")  # fac-x: another organisation's (moved away, or never ours)
A = Action


@pytest.mark.parametrize(("role", "facilities", "actions"), [
    # viewer: reads its assigned facilities, never another organisation's (fac-x).
    (PersonRole.VIEWER, {"fac-a"}, {A.READ}),
    # operator: + acknowledges.
    (PersonRole.OPERATOR, {"fac-a"}, {A.READ, A.ACKNOWLEDGE}),
    # facility manager: + settings and DR participation of its facilities.
    (PersonRole.FACILITY_MANAGER, {"fac-a"},
     {A.READ, A.ACKNOWLEDGE, A.EDIT_SETTINGS, A.DR_PARTICIPATION}),
    # energy manager: every facility of the organisation, assigned or not; + tariffs,
    # reports, DR opt-out, users.
    (PersonRole.ENERGY_MANAGER, {"fac-a", "fac-b", "fac-c"},
     {A.READ, A.ACKNOWLEDGE, A.EDIT_SETTINGS, A.DR_PARTICIPATION, A.MANAGE_TARIFFS,
      A.REPORTS, A.DR_OPT_OUT, A.MANAGE_USERS}),
    # admin: all of the organisation, every action.
    (PersonRole.ADMIN, {"fac-a", "fac-b", "fac-c"}, set(Action)),
])
def test_each_role_sees_and_may(role: PersonRole, facilities: set[str],
                                actions: set[Action]) -> None:
    g = grants(organisation_id="org-1", role=role, assigned_facility_ids=ASSIGNED,
               organisation_facility_ids=ORG)
    assert (set(g.facility_ids), set(g.actions)) == (facilities, actions)
    assert not g.may(A.READ, "fac-x")
    assert g.may(A.READ, "fac-a")


def test_may_checks_the_action_and_the_facility() -> None:
    g = grants(organisation_id="org-1", role=PersonRole.FACILITY_MANAGER,
               assigned_facility_ids=["fac-b"], organisation_facility_ids=ORG)
    assert g.may(A.EDIT_SETTINGS, "fac-b")
    assert not g.may(A.EDIT_SETTINGS, "fac-a")  # not assigned
    assert not g.may(A.DR_OPT_OUT, "fac-b")  # the energy manager's
    assert g.may(A.READ) and not g.may(A.READ_AUDIT)


def test_an_assigned_role_without_assignments_sees_nothing() -> None:
    g = grants(organisation_id="org-1", role=PersonRole.VIEWER, assigned_facility_ids=[],
               organisation_facility_ids=ORG)
    assert g.facility_ids == frozenset()


@pytest.mark.parametrize(("owner", "token_role", "token_facilities", "role", "facilities"), [
    # a viewer token of a facility manager: read only, its one facility
    (PersonRole.FACILITY_MANAGER, PersonRole.VIEWER, ["fac-a"], PersonRole.VIEWER, {"fac-a"}),
    # an admin token of an owner demoted to operator since: operator now
    (PersonRole.OPERATOR, PersonRole.ADMIN, None, PersonRole.OPERATOR, {"fac-a"}),
    # a token naming a facility its owner no longer has: not that one
    (PersonRole.VIEWER, PersonRole.VIEWER, ["fac-a", "fac-b"], PersonRole.VIEWER, {"fac-a"}),
    # an energy manager's token for one facility of the organisation
    (PersonRole.ENERGY_MANAGER, PersonRole.ENERGY_MANAGER, ["fac-c"],
     PersonRole.ENERGY_MANAGER, {"fac-c"}),
])
def test_a_personal_token_is_at_most_its_owner(
    owner: PersonRole, token_role: PersonRole, token_facilities: list[str] | None,
    role: PersonRole, facilities: set[str],
) -> None:
    g = narrowed(grants(organisation_id="org-1", role=owner, assigned_facility_ids=["fac-a"],
                        organisation_facility_ids=ORG),
                 role=token_role, facility_ids=token_facilities)
    assert (g.role, set(g.facility_ids)) == (role, facilities)
    assert g.actions == grants(organisation_id="org-1", role=role, assigned_facility_ids=(),
                               organisation_facility_ids=()).actions


@pytest.mark.parametrize(("actor", "current", "new", "allowed"), [
    (PersonRole.ADMIN, PersonRole.VIEWER, PersonRole.ADMIN, True),  # admins make admins
    (PersonRole.ADMIN, PersonRole.ADMIN, PersonRole.VIEWER, True),
    (PersonRole.ENERGY_MANAGER, None, PersonRole.FACILITY_MANAGER, True),  # a new member
    (PersonRole.ENERGY_MANAGER, PersonRole.VIEWER, PersonRole.ENERGY_MANAGER, True),
    (PersonRole.ENERGY_MANAGER, PersonRole.VIEWER, PersonRole.ADMIN, False),  # above itself
    (PersonRole.ENERGY_MANAGER, PersonRole.ADMIN, PersonRole.VIEWER, False),  # demote an admin
    (PersonRole.FACILITY_MANAGER, None, PersonRole.VIEWER, False),  # may not manage users
    (PersonRole.VIEWER, PersonRole.VIEWER, PersonRole.VIEWER, False),
])
def test_who_may_give_which_role(actor: PersonRole, current: PersonRole | None,
                                 new: PersonRole, allowed: bool) -> None:
    assert may_grant(actor, current=current, new=new) is allowed


def test_roles_are_ranked_viewer_to_admin() -> None:
    assert sorted(PersonRole, key=lambda r: r.rank) == [
        PersonRole.VIEWER, PersonRole.OPERATOR, PersonRole.FACILITY_MANAGER,
        PersonRole.ENERGY_MANAGER, PersonRole.ADMIN]
