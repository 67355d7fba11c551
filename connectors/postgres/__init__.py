"""PostgreSQL: metadata and events of the production profile. Schema migrations (Alembic) are
in ``connectors.postgres.migrate``, imported only by what migrates (``sems db``, tests): a
worker does not load Alembic."""

from connectors.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
