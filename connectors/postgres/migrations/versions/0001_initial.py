"""Initial schema: facilities and meters, demand-response events, load forecasts, dead letters
and window checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-05-01

Identifiers (facility and meter ids) are ``text COLLATE "C"``: they compare and sort byte by
byte, so ``ORDER BY facility_id`` gives the same order as SQLite whatever the database's
default collation (en_US.UTF-8 would sort ``plant-b`` before ``plant_a`` and ignore case).
Times are ``timestamptz``; the window checkpoints keep the epoch milliseconds of the window
logic (``tables/rollups.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.Text(collation="C")
DOUBLE: pg.DOUBLE_PRECISION[float] = pg.DOUBLE_PRECISION()
TIMESTAMPTZ = pg.TIMESTAMP(timezone=True)
JSONB = pg.JSONB()


def upgrade() -> None:
    op.create_table(
        "facilities",
        sa.Column("facility_id", ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False, comment="IANA zone of the site"),
        sa.Column("contract_demand_kw", DOUBLE, nullable=False),
        sa.PrimaryKeyConstraint("facility_id", name="facilities_pkey"),
        sa.CheckConstraint("contract_demand_kw > 0", name="facilities_contract_demand_kw_check"),
    )

    op.create_table(
        "meters",
        sa.Column("meter_id", ID, nullable=False),
        sa.Column("facility_id", ID, nullable=False),
        sa.Column("meter_type", sa.Text(), nullable=False),
        sa.Column("sample_interval_s", DOUBLE, nullable=False),
        sa.PrimaryKeyConstraint("meter_id", name="meters_pkey"),
        sa.ForeignKeyConstraint(["facility_id"], ["facilities.facility_id"],
                                name="meters_facility_id_fkey"),
        sa.CheckConstraint("sample_interval_s > 0", name="meters_sample_interval_s_check"),
    )
    # PostgreSQL does not index the referencing side of a foreign key by itself.
    op.create_index("meters_facility_id_idx", "meters", ["facility_id"])

    # Extended by the demand-response issue; updated_at is set by the writer (no trigger).
    op.create_table(
        "dr_events",
        sa.Column("id", pg.UUID(as_uuid=True), nullable=False,
                  server_default=sa.text("gen_random_uuid()")),
        sa.Column("event_id", sa.Text(), nullable=True, comment="the utility's id, if any"),
        sa.Column("facility_id", ID, nullable=False),
        sa.Column("event_start", TIMESTAMPTZ, nullable=False),
        sa.Column("event_end", TIMESTAMPTZ, nullable=False),
        sa.Column("target_reduction_kw", DOUBLE, nullable=True),
        sa.Column("target_reduction_percentage", DOUBLE, nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("baseline_kw", JSONB, nullable=True),
        sa.Column("plan", JSONB, nullable=True),
        sa.Column("achieved_reduction_kw", DOUBLE, nullable=True),
        sa.Column("created_at", TIMESTAMPTZ, nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("id", name="dr_events_pkey"),
        sa.UniqueConstraint("event_id", name="dr_events_event_id_key"),
        sa.ForeignKeyConstraint(["facility_id"], ["facilities.facility_id"],
                                name="dr_events_facility_id_fkey"),
        sa.CheckConstraint("status IN ('scheduled', 'active', 'completed', 'failed')",
                           name="dr_events_status_check"),
        sa.CheckConstraint("event_end > event_start", name="dr_events_window_check"),
    )
    op.create_index("dr_events_facility_start_idx", "dr_events", ["facility_id", "event_start"])

    # One row per facility and forecast time: a new run replaces the old values
    # (INSERT ... ON CONFLICT (facility_id, forecast_timestamp) DO UPDATE).
    op.create_table(
        "load_forecasts",
        sa.Column("facility_id", ID, nullable=False),
        sa.Column("forecast_timestamp", TIMESTAMPTZ, nullable=False),
        sa.Column("predicted_load_kw", DOUBLE, nullable=False),
        sa.Column("confidence_lower", DOUBLE, nullable=True,
                  comment="80 percent interval, lower bound"),
        sa.Column("confidence_upper", DOUBLE, nullable=True,
                  comment="80 percent interval, upper bound"),
        sa.Column("lower_95", DOUBLE, nullable=True,
                  comment="95 percent interval, lower bound"),
        sa.Column("upper_95", DOUBLE, nullable=True,
                  comment="95 percent interval, upper bound"),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("made_at", TIMESTAMPTZ, nullable=False),
        sa.PrimaryKeyConstraint("facility_id", "forecast_timestamp", name="load_forecasts_pkey"),
        sa.ForeignKeyConstraint(["facility_id"], ["facilities.facility_id"],
                                name="load_forecasts_facility_id_fkey"),
    )

    # One row per distinct (source, payload): MQTT delivers at least once, so a message that is
    # redelivered after a crash must not become a second dead letter.
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),  # bigserial
        sa.Column("received_at", TIMESTAMPTZ, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("payload_sha256", sa.Text(), nullable=False),
        sa.Column("record", JSONB, nullable=False, comment="the DeadLetter as JSON"),
        sa.PrimaryKeyConstraint("id", name="dead_letters_pkey"),
        sa.UniqueConstraint("source", "payload_sha256", name="dead_letters_source_payload_key"),
    )
    op.create_index("dead_letters_received_at_idx", "dead_letters", ["received_at"])

    op.create_table(
        "window_checkpoints",
        sa.Column("facility_id", ID, nullable=False),
        sa.Column("closed_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("max_ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("facility_id", name="window_checkpoints_pkey"),
    )


def downgrade() -> None:
    for table in ("window_checkpoints", "dead_letters", "load_forecasts", "dr_events", "meters",
                  "facilities"):
        op.drop_table(table)
