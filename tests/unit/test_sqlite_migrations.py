"""The SQLite migration runner on in-memory databases: order, the recorded version, one
transaction, refusal of a newer file; the shipped migrations are numbered and packaged."""

from __future__ import annotations

import re
import sqlite3
import threading
import tomllib
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest

from connectors.sqlite.migrations import (
    LATEST,
    MIGRATIONS,
    Migration,
    SchemaTooNew,
    migrate,
    statements,
    version_of,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def step(sql: str) -> Callable[[sqlite3.Connection], None]:
    def apply(conn: sqlite3.Connection) -> None:
        conn.execute(sql)

    return apply


def nothing(conn: sqlite3.Connection) -> None:
    pass


STEPS = (
    Migration(1, "a table", step("CREATE TABLE t (a INTEGER)")),
    Migration(2, "a column", step("ALTER TABLE t ADD COLUMN b TEXT")),
    Migration(3, "an index", step("CREATE INDEX t_by_b ON t (b)")),
)


def broken(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE half_done (x)")
    raise RuntimeError("migration 3 failed")


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(":memory:", isolation_level=None)
    yield c
    c.close()


def objects(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]


def test_pending_migrations_run_in_order_and_the_version_is_recorded(
    conn: sqlite3.Connection,
) -> None:
    assert migrate(conn, STEPS[:1]) == [1]
    assert version_of(conn) == 1
    assert migrate(conn, STEPS) == [2, 3]  # only those newer than the file
    assert version_of(conn) == 3
    assert [r[1] for r in conn.execute("PRAGMA table_info(t)")] == ["a", "b"]
    assert migrate(conn, STEPS) == []  # current: nothing runs
    assert not conn.in_transaction


def test_a_failed_migration_leaves_the_file_as_it_was(conn: sqlite3.Connection) -> None:
    migrate(conn, STEPS[:1])
    with pytest.raises(RuntimeError, match="migration 3 failed"):
        migrate(conn, (*STEPS[:2], Migration(3, "broken", broken)))
    # 2 had run in the same transaction: undone with 3, version and schema included
    assert version_of(conn) == 1
    assert objects(conn) == ["t"]
    assert [r[1] for r in conn.execute("PRAGMA table_info(t)")] == ["a"]
    assert not conn.in_transaction
    assert migrate(conn, STEPS) == [2, 3]  # and it can be retried


def test_a_file_newer_than_the_migrations_is_refused(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA user_version = 7")
    with pytest.raises(SchemaTooNew, match=r"version 7.*up to 3"):
        migrate(conn, STEPS)
    assert objects(conn) == []


@pytest.mark.parametrize("numbers", [(1, 3), (2,), (2, 1)])
def test_migrations_must_be_numbered_one_by_one(conn: sqlite3.Connection,
                                                numbers: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="numbered"):
        migrate(conn, [Migration(n, f"m{n}", nothing) for n in numbers])


@pytest.mark.parametrize(("script", "expected"), [
    # two statements, comments between them left out
    ("-- head\nCREATE TABLE a (x);\n\n-- b next\nCREATE TABLE b (y);\n",
     ["CREATE TABLE a (x);", "CREATE TABLE b (y);"]),
    # a ';' inside a comment within a statement does not end it; the comment is kept
    ("CREATE TABLE a (\n    x TEXT  -- one; two\n);\n",
     ["CREATE TABLE a (\n    x TEXT  -- one; two\n);"]),
    # nor does one inside a string
    ("INSERT INTO a VALUES ('p;q');\n", ["INSERT INTO a VALUES ('p;q');"]),
])
def test_statements_split_where_sqlite_would(script: str, expected: list[str]) -> None:
    assert list(statements(script)) == expected


def test_an_unfinished_statement_is_an_error() -> None:
    with pytest.raises(ValueError, match="incomplete"):
        list(statements("CREATE TABLE a (x);\nCREATE TABLE b (\n"))


def test_the_shipped_migrations_are_numbered_and_their_files_packaged() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
    files = [f.name for f in resources.files("connectors.sqlite.migrations").iterdir()
             if f.name.endswith(".sql")]
    assert files, "no migration scripts found"
    numbers = [int(match.group(1)) for name in files
               if (match := re.fullmatch(r"(\d{4})_\w+\.sql", name))]
    assert len(numbers) == len(files), f"a script is not named NNNN_what.sql: {files}"
    assert len(set(numbers)) == len(numbers) and set(numbers) <= set(range(1, LATEST + 1))
    # an installed SEMS has them too
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["connectors"]
    for name in files:
        assert any(fnmatch(f"sqlite/migrations/{name}", g) for g in globs), name


def test_a_new_file_migrates_to_the_latest_version(conn: sqlite3.Connection) -> None:
    assert migrate(conn) == list(range(1, LATEST + 1))
    assert version_of(conn) == LATEST
    assert "facilities" in objects(conn) and "dr_events_by_facility_end" in objects(conn)


def test_openers_at_once_migrate_a_file_once(tmp_path: Path) -> None:
    """Four connections migrating one file at the same moment: each migration runs once (a
    counting step records its runs in a table the migration itself creates), every opener
    ends at the last version, none fails."""

    path = tmp_path / "shared.db"
    sqlite3.connect(path).close()
    counted = (Migration(1, "count", step("CREATE TABLE runs (n INTEGER)")),
               Migration(2, "count", step("INSERT INTO runs VALUES (2)")),
               Migration(3, "count", step("INSERT INTO runs VALUES (3)")))
    start = threading.Barrier(4)
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def opener() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            start.wait()
            applied.append(migrate(conn, counted))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(applied) == [[], [], [], [1, 2, 3]]
    with sqlite3.connect(path) as conn:
        assert version_of(conn) == 3
        assert conn.execute("SELECT n FROM runs ORDER BY n").fetchall() == [(2,), (3,)]
