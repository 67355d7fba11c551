"""The baseline each facility's DR events settle with (its utility program's).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

METHODS = ("auto", "forecast", "caiso_10_in_10", "pjm_high_4_of_5", "meter_before")


def upgrade() -> None:
    op.add_column("facilities", sa.Column(
        "dr_baseline", sa.Text(), nullable=True,
        comment="DR baseline method; NULL: the SEMS_DR_BASELINE setting"))
    op.create_check_constraint(
        "facilities_dr_baseline_check", "facilities",
        "dr_baseline IN (" + ", ".join(f"'{m}'" for m in METHODS) + ")")


def downgrade() -> None:
    op.drop_constraint("facilities_dr_baseline_check", "facilities")
    op.drop_column("facilities", "dr_baseline")
