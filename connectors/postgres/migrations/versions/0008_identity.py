"""People (issue 16): organisations and their facilities, users, memberships (one role per user
per organisation), facility assignments, personal tokens, sign-in failures and the audit log.
Sessions are in Redis in this profile (connectors/cache/redis_sessions.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Emails are lower-cased by the schema (schemas/identity.py) and the check keeps them so, which
makes the plain unique constraint case-insensitive. A facility's organisation is kept apart
from ``facilities`` (one row per facility here), whose registry contract stays as it was. The
rules across rows (the last active admin, assignments within the organisation) are the
adapter's, under a lock of the organisation's row (connectors/postgres/identity.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.Text(collation="C")
TIMESTAMPTZ = pg.TIMESTAMP(timezone=True)
ROLES = "('admin', 'energy_manager', 'facility_manager', 'operator', 'viewer')"


def upgrade() -> None:
    op.create_table(
        "organisations",
        sa.Column("organisation_id", ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("organisation_id", name="organisations_pkey"),
    )
    op.create_table(
        "organisation_facilities",
        sa.Column("facility_id", ID, nullable=False),
        sa.Column("organisation_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("facility_id", name="organisation_facilities_pkey"),
        sa.UniqueConstraint("facility_id", "organisation_id",
                            name="organisation_facilities_facility_organisation_key"),
        sa.ForeignKeyConstraint(["facility_id"], ["facilities.facility_id"],
                                name="organisation_facilities_facility_id_fkey"),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisations.organisation_id"],
                                name="organisation_facilities_organisation_id_fkey"),
    )
    op.create_index("organisation_facilities_organisation_id_idx", "organisation_facilities",
                    ["organisation_id"])
    op.create_table(
        "users",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("email", ID, nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMPTZ, nullable=False),
        sa.Column("last_sign_in_at", TIMESTAMPTZ, nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True, comment="argon2id, PHC form"),
        sa.Column("oidc_issuer", sa.Text(), nullable=True),
        sa.Column("oidc_subject", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name="users_pkey"),
        sa.UniqueConstraint("email", name="users_email_key"),
        sa.UniqueConstraint("oidc_issuer", "oidc_subject", name="users_oidc_key"),
        sa.CheckConstraint("email = lower(email)", name="users_email_check"),
        sa.CheckConstraint("status IN ('active', 'disabled')", name="users_status_check"),
        sa.CheckConstraint("(oidc_issuer IS NULL) = (oidc_subject IS NULL)",
                           name="users_oidc_check"),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("organisation_id", ID, nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "organisation_id", name="memberships_pkey"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE",
                                name="memberships_user_id_fkey"),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisations.organisation_id"],
                                name="memberships_organisation_id_fkey"),
        sa.CheckConstraint(f"role IN {ROLES}", name="memberships_role_check"),
    )
    op.create_index("memberships_organisation_id_idx", "memberships",
                    ["organisation_id", "role"])
    op.create_table(
        "facility_assignments",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("organisation_id", ID, nullable=False),
        sa.Column("facility_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "organisation_id", "facility_id",
                                name="facility_assignments_pkey"),
        sa.ForeignKeyConstraint(["user_id", "organisation_id"],
                                ["memberships.user_id", "memberships.organisation_id"],
                                ondelete="CASCADE", name="facility_assignments_member_fkey"),
        # An assignment is to a facility of the member's own organisation.
        sa.ForeignKeyConstraint(["facility_id", "organisation_id"],
                                ["organisation_facilities.facility_id",
                                 "organisation_facilities.organisation_id"],
                                name="facility_assignments_facility_fkey"),
    )
    op.create_index("facility_assignments_facility_id_idx", "facility_assignments",
                    ["facility_id"])
    op.create_table(
        "personal_tokens",
        sa.Column("token_id", sa.Text(), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("organisation_id", ID, nullable=False),
        sa.Column("token_sha256", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("facility_ids", pg.ARRAY(ID), nullable=True,
                  comment="none: every facility the owner has"),
        sa.Column("created_at", TIMESTAMPTZ, nullable=False),
        sa.Column("expires_at", TIMESTAMPTZ, nullable=False),
        sa.Column("revoked_at", TIMESTAMPTZ, nullable=True),
        sa.PrimaryKeyConstraint("token_id", name="personal_tokens_pkey"),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE",
                                name="personal_tokens_user_id_fkey"),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisations.organisation_id"],
                                name="personal_tokens_organisation_id_fkey"),
        sa.CheckConstraint(f"role IN {ROLES}", name="personal_tokens_role_check"),
    )
    op.create_index("personal_tokens_user_id_idx", "personal_tokens",
                    ["user_id", "created_at"])
    op.create_table(
        "sign_in_failures",
        sa.Column("account", ID, nullable=False, comment="a normalised email, known or not"),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", TIMESTAMPTZ, nullable=False),
        sa.Column("last_failed_at", TIMESTAMPTZ, nullable=False),
        sa.PrimaryKeyConstraint("account", name="sign_in_failures_pkey"),
        sa.CheckConstraint("failures > 0", name="sign_in_failures_failures_check"),
    )
    op.create_table(
        "audit_log",
        sa.Column("audit_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("at", TIMESTAMPTZ, nullable=False),
        sa.Column("actor_id", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("organisation_id", ID, nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("client_address", sa.Text(), nullable=True),
        sa.Column("details", pg.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("audit_id", name="audit_log_pkey"),
    )
    op.create_index("audit_log_organisation_id_idx", "audit_log",
                    ["organisation_id", "audit_id"])
    op.create_index("audit_log_at_idx", "audit_log", ["at"])


def downgrade() -> None:
    for table in ("audit_log", "sign_in_failures", "personal_tokens", "facility_assignments",
                  "memberships", "users", "organisation_facilities", "organisations"):
        op.drop_table(table)
