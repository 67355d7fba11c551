"""The embedded store's schema as numbered migrations, the file's version in
``PRAGMA user_version`` (as the PostgreSQL store's are Alembic revisions,
``connectors/postgres/migrations/``).

``migrate`` runs when the store opens: the migrations newer than the file's version, in order,
in one ``BEGIN IMMEDIATE`` transaction that also sets the version, so a failure leaves the file
as it was and two processes opening one file do not both migrate it. A file newer than this
code knows is refused (``SchemaTooNew``) rather than written with an older idea of its tables.

To change the schema, add the next number to ``MIGRATIONS``: a file ``NNNN_what.sql`` here
(``_sql``), or a Python step for what SQL cannot say. Never edit a migration that has shipped.
Version 0 is a file no SEMS has touched, or one made before migrations were numbered (up to
cf168ae), which migration 1 brings to that release's schema whatever its age.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources


class SchemaTooNew(Exception):
    """The file was migrated by a newer SEMS than this one. Not a ``RuntimeError``, which
    the store's thread hand-over reads as its own shutdown (``StoreUnavailable``)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[sqlite3.Connection], None]


def statements(script: str) -> Iterator[str]:
    """The statements of a script, each complete (``sqlite3.complete_statement``: a ``;`` in
    a comment or a string does not end one); comments between statements are left out."""
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete statement at the end of the script: {pending.strip()!r}")


def _sql(name: str) -> Callable[[sqlite3.Connection], None]:
    """The migration in file ``name`` of this package, read when it is applied."""

    def apply(conn: sqlite3.Connection) -> None:
        script = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
        for statement in statements(script):
            conn.execute(statement)

    return apply


BASELINE_COLUMNS = {
    "facilities": ("latitude REAL", "longitude REAL", "country TEXT", "dr_baseline TEXT"),
    "dr_events": ("event_end_ms INTEGER",),
}
"""Columns that releases before numbered migrations added to tables that had shipped without
them (their ``ADDED_COLUMNS``): migration 1 adds those a file lacks."""


def _epoch_ms(rfc3339: str) -> int:
    """An event's end as the releases before migrations stored it (pydantic's JSON of an aware
    datetime: ``2026-11-20T15:00:00Z`` or with an offset)."""
    ts = datetime.fromisoformat(rfc3339)
    if ts.tzinfo is None:
        raise ValueError(f"a DR event's end without an offset: {rfc3339!r}")
    return round(ts.timestamp() * 1000)


def _baseline(conn: sqlite3.Connection) -> None:
    _sql("0001_baseline.sql")(conn)
    for table, columns in BASELINE_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    # The end of the events a release before dr_events.event_end_ms stored, and its index:
    # the overlap check reads it.
    # Read with this migration's own parser, not today's DrEvent model: a migration that has
    # shipped must not change with the code around it.
    rows = conn.execute("SELECT id, json_extract(record, '$.event_end') FROM dr_events "
                        "WHERE event_end_ms IS NULL").fetchall()
    conn.executemany("UPDATE dr_events SET event_end_ms = ? WHERE id = ?",
                     [(_epoch_ms(event_end), id) for id, event_end in rows])
    conn.execute("CREATE INDEX IF NOT EXISTS dr_events_by_facility_end "
                 "ON dr_events (facility_id, event_end_ms)")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the schema of the releases before numbered migrations", _baseline),
    Migration(2, "people: organisations, users, roles, sessions, audit log (issue 16)",
              _sql("0002_identity.sql")),
    Migration(3, "one-time password-reset tokens (issue 16)", _sql("0003_password_resets.sql")),
)
LATEST = MIGRATIONS[-1].version


def version_of(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check(current: int, latest: int) -> None:
    if current > latest:
        raise SchemaTooNew(
            f"the SQLite store is at schema version {current}, written by a newer SEMS; this "
            f"one knows versions up to {latest}: run the newer SEMS, or restore a backup "
            "from before it")


def migrate(conn: sqlite3.Connection,
            migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the file to the last of ``migrations``; returns the versions applied (none when
    it was current). ``conn`` is in autocommit mode (``isolation_level=None``) and outside a
    transaction. ``migrations`` are numbered 1, 2, ... (tests pass their own)."""
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise ValueError("migrations must be numbered 1, 2, ... in order")
    latest = migrations[-1].version if migrations else 0
    current = version_of(conn)
    _check(current, latest)
    if current == latest:
        return []  # the usual open: no write lock taken
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = version_of(conn)  # another process may have migrated it meanwhile
        _check(current, latest)
        applied = []
        for migration in migrations[current:]:
            migration.apply(conn)
            conn.execute(f"PRAGMA user_version = {migration.version:d}")
            applied.append(migration.version)
    except BaseException:
        if conn.in_transaction:  # SQLite ends it itself after some errors (a full disk)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return applied
