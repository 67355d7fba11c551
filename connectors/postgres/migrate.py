"""Schema migrations with Alembic, driven from code: ``sems db upgrade`` and test set-up.

There is no alembic.ini. The configuration points at the ``migrations`` folder next to this
module, and the connection is opened here and handed to ``migrations/env.py``, so the DSN
(and its password) never passes through Alembic's configparser, whose ``%`` interpolation
would break on a percent-encoded password.

Not thread-safe: Alembic keeps the running migration's context in module globals (two upgrades
in threads of one process hung). Concurrent upgrades from several processes or hosts are safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import URL, create_engine, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from connectors.postgres.db import describe
from tables.ports.store import StoreUnavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Concurrent upgrades (several SEMS hosts starting at once) take turns on this advisory lock;
# the later ones find the schema current and have nothing left to do. "SEMS" in ASCII.
MIGRATION_LOCK_KEY = 0x53454D53


def sqlalchemy_url(dsn: str) -> URL:
    """The SQLAlchemy URL (psycopg 3 driver) of a libpq DSN: ``postgresql://`` or
    ``postgres://`` URLs, or ``key=value`` strings."""
    if dsn.startswith(("postgresql://", "postgres://")):
        try:
            return make_url(dsn).set(drivername="postgresql+psycopg")
        except sqlalchemy.exc.ArgumentError:  # its message quotes the URL, password included
            raise ValueError("the PostgreSQL DSN is not a valid URL") from None
    describe(dsn)  # validates without echoing the DSN
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    port = params.pop("port", None)
    return URL.create("postgresql+psycopg", username=params.pop("user", None),
                      password=params.pop("password", None), host=params.pop("host", None),
                      port=int(port) if port else None, database=params.pop("dbname", None),
                      query=params)


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@contextmanager
def _connection(dsn: str) -> Iterator[Connection]:
    engine = create_engine(sqlalchemy_url(dsn), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    except sqlalchemy.exc.OperationalError as exc:
        raise StoreUnavailable(f"{describe(dsn)} is unavailable: {exc.orig}") from exc
    finally:
        engine.dispose()


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head


def upgrade(dsn: str, revision: str = "head") -> None:
    """Apply the pending migrations up to ``revision``, all in one transaction; a no-op when
    the database is there already."""
    config = _config()
    with _connection(dsn) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def downgrade(dsn: str, revision: str) -> None:
    """Revert to ``revision`` (``"base"``: drop every table of the schema)."""
    config = _config()
    with _connection(dsn) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        connection.commit()


def current_revision(dsn: str) -> str | None:
    """The database's revision; ``None`` before the first upgrade."""
    with _connection(dsn) as connection:
        return MigrationContext.configure(connection).get_current_revision()
