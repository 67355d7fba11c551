"""Utilities and their API keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

API keys are kept as the SHA-256 of their secret (see api/apikeys.py); the webhook secret is
kept as is, since verifying an HMAC needs it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.Text(collation="C")
TIMESTAMPTZ = pg.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "utilities",
        sa.Column("utility_id", ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("facility_ids", pg.ARRAY(ID), nullable=False,
                  comment="the facilities enrolled with this utility"),
        sa.Column("webhook_secret", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("utility_id", name="utilities_pkey"),
    )
    op.create_table(
        "utility_api_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("utility_id", ID, nullable=False),
        sa.Column("key_sha256", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMPTZ, nullable=False),
        sa.Column("revoked_at", TIMESTAMPTZ, nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="utility_api_keys_pkey"),
        sa.ForeignKeyConstraint(["utility_id"], ["utilities.utility_id"],
                                name="utility_api_keys_utility_id_fkey"),
    )
    op.create_index("utility_api_keys_utility_id_idx", "utility_api_keys", ["utility_id"])


def downgrade() -> None:
    op.drop_table("utility_api_keys")
    op.drop_table("utilities")
