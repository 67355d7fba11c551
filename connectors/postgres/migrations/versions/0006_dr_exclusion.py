"""DR: one event at a time per facility, enforced by PostgreSQL (an exclusion constraint over
the facility and ``[event_start, event_end)`` of every event that is not failed), so that
concurrent intakes cannot both insert overlapping events.

Events stored before this revision may overlap (the intake checked by a read, then wrote).
They are resolved before the constraint is added: per facility, events are kept in this
order, active first (it may have loads shed), then completed, then scheduled, each by
creation; an event overlapping one kept already is marked ``failed`` with the reason appended
to its ``failures`` (a failed event sheds nothing and leaves the constraint's scope). The
DR agent treats such an event as any failed one.

The utility's event id was unique per (utility, event id, facility) with NULLs not distinct,
so every event of one facility created through the API (no event id; an admin's, no utility
either) collided with the first one: the insert did nothing and the API answered 201 for an
event it never stored. It is unique now only where there is an event id.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

CONSTRAINT = "dr_events_one_at_a_time_excl"
UTILITY_KEY = "dr_events_utility_event_facility_key"

FAIL_OVERLAPPING = """
DO $$
DECLARE
    r record;
    kept uuid[] := '{}';
    other uuid;
BEGIN
    FOR r IN SELECT id, facility_id, event_start, event_end FROM dr_events
             WHERE status <> 'failed'
             ORDER BY status = 'active' DESC, status = 'completed' DESC, created_at, id LOOP
        SELECT k.id INTO other FROM dr_events k
        WHERE k.id = ANY (kept) AND k.facility_id = r.facility_id
          AND tstzrange(k.event_start, k.event_end, '[)')
              && tstzrange(r.event_start, r.event_end, '[)')
        ORDER BY k.event_start, k.id LIMIT 1;
        IF other IS NULL THEN
            kept := kept || r.id;
        ELSE
            UPDATE dr_events SET status = 'failed', updated_at = now(),
                failures = failures || jsonb_build_array(
                    'failed by migration 0006: overlaps event ' || other
                    || ' of the same facility (a facility takes one DR event at a time)')
            WHERE id = r.id;
        END IF;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    # No intake may insert between resolving the old overlaps and adding the constraint.
    op.execute("LOCK TABLE dr_events IN SHARE ROW EXCLUSIVE MODE")
    op.execute(FAIL_OVERLAPPING)
    op.execute(f"ALTER TABLE dr_events ADD CONSTRAINT {CONSTRAINT} EXCLUDE USING gist "
               "(facility_id WITH =, tstzrange(event_start, event_end, '[)') WITH &&) "
               "WHERE (status <> 'failed')")
    op.drop_constraint(UTILITY_KEY, "dr_events")
    op.execute(f"CREATE UNIQUE INDEX {UTILITY_KEY} ON dr_events "
               "(utility_id, event_id, facility_id) NULLS NOT DISTINCT "
               "WHERE event_id IS NOT NULL")


def downgrade() -> None:
    # The extension stays: other objects may use it, and it costs nothing unused.
    op.drop_constraint(CONSTRAINT, "dr_events")
    op.drop_index(UTILITY_KEY, "dr_events")
    op.execute(f"ALTER TABLE dr_events ADD CONSTRAINT {UTILITY_KEY} "
               "UNIQUE NULLS NOT DISTINCT (utility_id, event_id, facility_id)")
