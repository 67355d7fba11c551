"""The value a load had when its event's commands went out, on each apply command: what the DR
watchdog restores a load left shed to (agents/dr_watchdog.py), without the plan.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("bms_commands", sa.Column(
        "restore_value", sa.Float(), nullable=True,
        comment="apply commands: the load's setting before the event (degC offset or %)"))


def downgrade() -> None:
    op.drop_column("bms_commands", "restore_value")
