"""Alembic environment of the PostgreSQL schema. There is no alembic.ini: ``migrate.py`` builds
the configuration and hands over an open connection (``config.attributes["connection"]``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from connectors.postgres.migrate import MIGRATION_LOCK_KEY


def run_online(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None)
    # PostgreSQL has transactional DDL: all pending revisions commit together, or none does.
    # The lock is taken before Alembic reads the current revision.
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                           {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


def run_offline() -> None:
    """``--sql`` mode: print the DDL for review instead of running it."""
    context.configure(dialect_name="postgresql", literal_binds=True, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run the migrations through connectors.postgres.migrate "
                           "(it passes the connection; there is no alembic.ini)")
    run_online(connection)
