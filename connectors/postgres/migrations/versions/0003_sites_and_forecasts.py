"""Facility location and country (weather and public holidays of the load forecasts); whether
a forecast used weather.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

DOUBLE: pg.DOUBLE_PRECISION[float] = pg.DOUBLE_PRECISION()


def upgrade() -> None:
    op.add_column("facilities", sa.Column("latitude", DOUBLE, nullable=True))
    op.add_column("facilities", sa.Column("longitude", DOUBLE, nullable=True))
    op.add_column("facilities", sa.Column("country", sa.Text(), nullable=True,
                                          comment="ISO 3166-1 alpha-2, for public holidays"))
    op.create_check_constraint("facilities_latitude_check", "facilities",
                               "latitude BETWEEN -90 AND 90")
    op.create_check_constraint("facilities_longitude_check", "facilities",
                               "longitude BETWEEN -180 AND 180")
    op.add_column("load_forecasts", sa.Column("weather_used", sa.Boolean(), nullable=False,
                                              server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("load_forecasts", "weather_used")
    op.drop_constraint("facilities_longitude_check", "facilities")
    op.drop_constraint("facilities_latitude_check", "facilities")
    for column in ("country", "longitude", "latitude"):
        op.drop_column("facilities", column)
