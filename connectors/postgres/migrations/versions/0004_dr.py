"""Demand response: dr_events gets what the DR agent keeps (utility, source, report, failures,
release progress, trace id); the utility's event id is unique per utility and facility (one
notification names several facilities); bms_commands is the BMS command audit trail.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.Text(collation="C")
DOUBLE: pg.DOUBLE_PRECISION[float] = pg.DOUBLE_PRECISION()
TIMESTAMPTZ = pg.TIMESTAMP(timezone=True)
JSONB = pg.JSONB()


def upgrade() -> None:
    op.drop_constraint("dr_events_event_id_key", "dr_events")
    op.add_column("dr_events", sa.Column("utility_id", ID, nullable=True))
    op.add_column("dr_events", sa.Column("source", sa.Text(), nullable=False,
                                         server_default="api"))
    op.add_column("dr_events", sa.Column("report", JSONB, nullable=True))
    op.add_column("dr_events", sa.Column("failures", JSONB, nullable=False,
                                         server_default=sa.text("'[]'::jsonb")))
    op.add_column("dr_events", sa.Column("release_stages_sent", sa.Integer(), nullable=False,
                                         server_default="0"))
    op.add_column("dr_events", sa.Column("trace_id", sa.Text(), nullable=True))
    op.create_check_constraint("dr_events_source_check", "dr_events",
                               "source IN ('webhook', 'api')")
    # NULLS NOT DISTINCT (PostgreSQL 15): an event id without a utility is unique too.
    op.execute("ALTER TABLE dr_events ADD CONSTRAINT dr_events_utility_event_facility_key "
               "UNIQUE NULLS NOT DISTINCT (utility_id, event_id, facility_id)")
    op.create_index("dr_events_status_idx", "dr_events", ["status"])

    op.create_table(
        "bms_commands",
        sa.Column("command_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("dr_event_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("facility_id", ID, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("target_id", sa.Text(), nullable=False),
        sa.Column("value", DOUBLE, nullable=False),
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("release_stage", sa.Integer(), nullable=True),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("trace_id", sa.Text(), nullable=True),
        sa.Column("requested_at", TIMESTAMPTZ, nullable=False),
        sa.Column("sent_at", TIMESTAMPTZ, nullable=True),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("applied_at", TIMESTAMPTZ, nullable=True, comment="the BMS's clock"),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("fault_code", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("replayed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("released_at", TIMESTAMPTZ, nullable=True),
        sa.PrimaryKeyConstraint("command_id", name="bms_commands_pkey"),
        sa.ForeignKeyConstraint(["dr_event_id"], ["dr_events.id"],
                                name="bms_commands_dr_event_id_fkey"),
        sa.CheckConstraint("phase IN ('apply', 'release')", name="bms_commands_phase_check"),
        sa.CheckConstraint("result IN ('pending', 'ok', 'failed')",
                           name="bms_commands_result_check"),
        sa.CheckConstraint("kind IN ('zone_setpoint_offset', 'lighting_level')",
                           name="bms_commands_kind_check"),
    )
    op.create_index("bms_commands_dr_event_idx", "bms_commands", ["dr_event_id", "requested_at"])


def downgrade() -> None:
    op.drop_table("bms_commands")
    op.drop_index("dr_events_status_idx", "dr_events")
    op.drop_constraint("dr_events_utility_event_facility_key", "dr_events")
    op.drop_constraint("dr_events_source_check", "dr_events")
    for column in ("trace_id", "release_stages_sent", "failures", "report", "source",
                   "utility_id"):
        op.drop_column("dr_events", column)
    op.create_unique_constraint("dr_events_event_id_key", "dr_events", ["event_id"])
