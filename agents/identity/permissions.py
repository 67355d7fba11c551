"""What a person may see and do: a pure function of their role in an organisation, the
facilities they are assigned and the facilities of that organisation (issue 16).

Each role may do everything the roles below it may; the facility-scoped roles (facility
manager, operator, viewer) see only their assigned facilities, the others every facility of
their organisation, never another organisation's:

=================  ======================  =================================================
role               facilities              actions
=================  ======================  =================================================
viewer             assigned                read
operator           assigned                + acknowledge
facility_manager   assigned                + edit settings, DR participation
energy_manager     all of the organisation + tariffs, reports, DR opt-out, manage users (up
                                           to energy manager)
admin              all of the organisation + manage users (any role), audit log, every
                                           session, the organisation
=================  ======================  =================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from schemas.identity import ORGANISATION_WIDE_ROLES, PersonRole


class Action(StrEnum):
    READ = "read"
    ACKNOWLEDGE = "acknowledge"
    EDIT_SETTINGS = "edit_settings"
    DR_PARTICIPATION = "dr_participation"
    DR_OPT_OUT = "dr_opt_out"
    MANAGE_TARIFFS = "manage_tariffs"
    REPORTS = "reports"
    MANAGE_USERS = "manage_users"
    READ_AUDIT = "read_audit"
    MANAGE_SESSIONS = "manage_sessions"
    MANAGE_ORGANISATION = "manage_organisation"


_OWN: dict[PersonRole, frozenset[Action]] = {
    PersonRole.VIEWER: frozenset({Action.READ}),
    PersonRole.OPERATOR: frozenset({Action.ACKNOWLEDGE}),
    PersonRole.FACILITY_MANAGER: frozenset({Action.EDIT_SETTINGS, Action.DR_PARTICIPATION}),
    PersonRole.ENERGY_MANAGER: frozenset({Action.MANAGE_TARIFFS, Action.REPORTS,
                                          Action.DR_OPT_OUT, Action.MANAGE_USERS}),
    PersonRole.ADMIN: frozenset({Action.READ_AUDIT, Action.MANAGE_SESSIONS,
                                 Action.MANAGE_ORGANISATION}),
}
ACTIONS: dict[PersonRole, frozenset[Action]] = {
    role: frozenset[Action]().union(*(_OWN[r] for r in PersonRole if r.rank <= role.rank))
    for role in PersonRole
}
"""Every action of each role: its own and those of every role below it."""



@dataclass(frozen=True, slots=True)
class Grants:
    """What one person (or one of their personal tokens) may do in one organisation."""

    organisation_id: str
    role: PersonRole
    facility_ids: frozenset[str]
    actions: frozenset[Action]

    def may(self, action: Action, facility_id: str | None = None) -> bool:
        """Whether ``action`` is allowed, on ``facility_id`` when one is named."""
        return action in self.actions and (facility_id is None
                                           or facility_id in self.facility_ids)


def grants(*, organisation_id: str, role: PersonRole, assigned_facility_ids: Iterable[str],
           organisation_facility_ids: Iterable[str]) -> Grants:
    """A member's grants. Assignments to a facility that is not (or no longer) the
    organisation's are ignored: a facility moved to another customer leaves every old
    assignment powerless at once."""
    facilities = frozenset(organisation_facility_ids)
    if role not in ORGANISATION_WIDE_ROLES:
        facilities = facilities & frozenset(assigned_facility_ids)
    return Grants(organisation_id=organisation_id, role=role, facility_ids=facilities,
                  actions=ACTIONS[role])


def narrowed(owner: Grants, *, role: PersonRole,
             facility_ids: Iterable[str] | None = None) -> Grants:
    """The grants of a personal token of ``owner``'s: its role, capped by the owner's role
    now, and its facilities, capped by the owner's now (so demoting or unassigning the
    owner narrows their tokens too)."""
    capped = role if role.rank <= owner.role.rank else owner.role
    facilities = owner.facility_ids if facility_ids is None else (
        owner.facility_ids & frozenset(facility_ids))
    return Grants(organisation_id=owner.organisation_id, role=capped, facility_ids=facilities,
                  actions=ACTIONS[capped])


def may_grant(actor: PersonRole, *, current: PersonRole | None, new: PersonRole) -> bool:
    """Whether ``actor`` may give a user the role ``new`` (``current``: the user's role
    now, none for a new member): only with the right to manage users, never above the
    actor's own role, and never to someone who is already above it."""
    if Action.MANAGE_USERS not in ACTIONS[actor]:
        return False
    return new.rank <= actor.rank and (current is None or current.rank <= actor.rank)
