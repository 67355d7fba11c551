"""One-time password-reset tokens (issue 16).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Only the token's SHA-256 is stored; a token sets its user's password once, before it expires,
in the transaction that marks it used under a lock of its row (connectors/postgres/
identity.py, ``use_password_reset``). A deleted user's tokens go with them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.Text(collation="C")
TIMESTAMPTZ = pg.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "password_resets",
        sa.Column("token_sha256", sa.Text(), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("organisation_id", ID, nullable=True,
                  comment="issued in; none: at the CLI"),
        sa.Column("created_at", TIMESTAMPTZ, nullable=False),
        sa.Column("expires_at", TIMESTAMPTZ, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("used_at", TIMESTAMPTZ, nullable=True),
        sa.PrimaryKeyConstraint("token_sha256", name="password_resets_pkey"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE",
                                name="password_resets_user_id_fkey"),
        sa.CheckConstraint("expires_at > created_at", name="password_resets_expiry_check"),
    )
    op.create_index("password_resets_user_id_idx", "password_resets", ["user_id"])


def downgrade() -> None:
    op.drop_table("password_resets")
