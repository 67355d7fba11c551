"""`sems org add|list` and `sems user add|list|set-role|assign|disable|reset-password` (issue
16) on the embedded store: what each prints, what it writes, and a clear non-zero exit with
a message for each bad input, nothing half-written."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import orjson
import pytest

from agents.identity.passwords import PasswordHasher
from schemas.identity import sha256_hex
from streams.cli import main

pytestmark = pytest.mark.integration

SITE = {"facilities": [{"facility_id": f, "name": f, "contract_demand_kw": 100}
                       for f in ("plant-1", "plant-2", "plant-9")], "meters": []}
PASSPHRASE = "a long unusual passphrase"


@pytest.fixture
def data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """plant-1 and plant-2 of organisation acme, plant-9 of globex; boss@acme.example its
    admin."""
    site = tmp_path / "site.json"
    site.write_bytes(orjson.dumps(SITE))
    assert sems(tmp_path, "facilities", "import", str(site)) == 0
    assert sems(tmp_path, "org", "add", "acme", "Acme Corp", "--facility", "plant-1",
                "--facility", "plant-2") == 0
    assert sems(tmp_path, "org", "add", "globex", "Globex", "--facility", "plant-9") == 0
    assert sems(tmp_path, "user", "add", "--email", "Boss@Acme.example", "--name", "Boss",
                "--org", "acme", "--role", "admin") == 0
    capsys.readouterr()
    return tmp_path


def sems(data_dir: Path, *args: str) -> int:
    return main([*args, "--data-dir", str(data_dir)])


def rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / "sems.db") as conn:
        return conn.execute(sql).fetchall()


def test_organisations_are_added_and_listed(data_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert sems(data_dir, "org", "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "ORGANISATION\tNAME\tFACILITIES\tMEMBERS",
        "acme\tAcme Corp\tplant-1,plant-2\t1",
        "globex\tGlobex\tplant-9\t0",
    ]
    assert rows(data_dir, "SELECT action, actor_id FROM audit_log WHERE target = "
                          "'organisation:acme'") == [("organisation_created", "cli")]


def test_a_generated_password_is_printed_once_and_signs_in(
    data_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert sems(data_dir, "user", "add", "--email", "op@acme.example", "--name", "Op",
                "--org", "acme", "--role", "operator", "--facility", "plant-1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("user op@acme.example (u-") and out[0].endswith(
        "operator in acme")
    assert out[1] == "password (shown once):"
    password = out[2]
    assert len(password) == 24
    [(stored,)] = rows(data_dir, "SELECT password_hash FROM users WHERE email = "
                                 "'op@acme.example'")
    assert isinstance(stored, str) and PasswordHasher().verify(stored, password)
    assert password not in stored


def test_a_password_from_stdin_is_not_printed(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSPHRASE + "\n"))
    assert sems(data_dir, "user", "add", "--email", "v@acme.example", "--name", "V",
                "--org", "acme", "--role", "viewer", "--password-stdin") == 0
    assert PASSPHRASE not in capsys.readouterr().out
    [(stored,)] = rows(data_dir, "SELECT password_hash FROM users WHERE email = "
                                 "'v@acme.example'")
    assert isinstance(stored, str) and PasswordHasher().verify(stored, PASSPHRASE)


@pytest.mark.parametrize(("args", "stdin", "complaint"), [
    (("--org", "nope", "--role", "viewer"), "", "no organisation 'nope'"),
    (("--org", "acme", "--role", "viewer", "--password-stdin"), "password1234\n",
     "most common"),  # a weak password
    (("--org", "acme", "--role", "viewer", "--password-stdin"), "\n", "no password"),
    (("--org", "acme", "--role", "viewer", "--facility", "plant-9"), "",
     "do not belong to organisation acme"),  # globex's
])
def test_bad_new_users_are_refused_and_nothing_is_written(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...], stdin: str, complaint: str,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert sems(data_dir, "user", "add", "--email", "new@acme.example", "--name", "New",
                *args) == 2
    assert complaint in capsys.readouterr().err
    assert rows(data_dir, "SELECT 1 FROM users WHERE email = 'new@acme.example'") == []


@pytest.mark.parametrize(("args", "complaint"), [
    (("user", "add", "--email", "BOSS@acme.example", "--name", "B", "--org", "acme",
      "--role", "viewer"), "already has the email address"),
    (("user", "add", "--email", "no-at-sign", "--name", "B", "--org", "acme", "--role",
      "viewer"), "email"),
    (("org", "add", "acme", "Again"), "already exists"),
    (("org", "add", "initech", "Initech", "--facility", "plant-7"), "unknown facilities"),
    (("user", "set-role", "boss@acme.example", "acme", "viewer"), "without an active admin"),
    (("user", "disable", "boss@acme.example"), "without an active admin"),
    (("user", "set-role", "nobody@acme.example", "acme", "viewer"), "no user"),
    (("user", "assign", "boss@acme.example", "globex", "plant-9"), "not a member of globex"),
    (("user", "assign", "boss@acme.example", "acme", "plant-9"), "do not belong"),
    (("user", "list", "--org", "nope"), "no organisation 'nope'"),
])
def test_bad_input_exits_2_with_a_message(data_dir: Path, capsys: pytest.CaptureFixture[str],
                                          args: tuple[str, ...], complaint: str) -> None:
    assert sems(data_dir, *args) == 2
    assert complaint in capsys.readouterr().err
    membership = rows(data_dir, "SELECT role FROM memberships JOIN users USING (user_id) "
                                "WHERE email = 'boss@acme.example'")
    assert membership == [("admin",)]  # the last admin stays one


def test_roles_assignments_and_disabling(data_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert sems(data_dir, "user", "add", "--email", "fm@acme.example", "--name", "Fm",
                "--org", "acme", "--role", "viewer") == 0
    assert sems(data_dir, "user", "set-role", "fm@acme.example", "acme",
                "facility_manager") == 0
    assert sems(data_dir, "user", "assign", "fm@acme.example", "acme", "plant-2",
                "plant-1") == 0
    assert sems(data_dir, "user", "set-role", "fm@acme.example", "globex", "viewer") == 0
    capsys.readouterr()
    assert sems(data_dir, "user", "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "EMAIL\tNAME\tSTATUS\tORGANISATION:ROLE:FACILITIES",
        "boss@acme.example\tBoss\tactive\tacme:admin:-",
        "fm@acme.example\tFm\tactive\tacme:facility_manager:plant-1,plant-2 globex:viewer:-",
    ]
    # A second admin makes the first one's demotion possible.
    assert sems(data_dir, "user", "set-role", "fm@acme.example", "acme", "admin") == 0
    assert sems(data_dir, "user", "disable", "boss@acme.example") == 0
    assert "boss@acme.example disabled; 0 sessions revoked" in capsys.readouterr().out
    assert sems(data_dir, "user", "list", "--org", "globex") == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "fm@acme.example\tFm\tactive\tglobex:viewer:-"]
    audited = rows(data_dir, "SELECT action FROM audit_log WHERE actor_id = 'cli' AND "
                             "target = 'user:' || (SELECT user_id FROM users WHERE "
                             "email = 'boss@acme.example') ORDER BY audit_id")
    assert [a for (a,) in audited] == ["user_created", "role_changed", "user_disabled"]


def test_reset_password_prints_a_one_time_token(data_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert sems(data_dir, "user", "reset-password", "Boss@acme.example") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("password-reset token for boss@acme.example (shown once")
    token = out[1]
    assert len(token) >= 43
    assert rows(data_dir, "SELECT token_sha256, created_by, used_at_us FROM "
                          "password_resets") == [(sha256_hex(token), "cli", None)]
    assert sems(data_dir, "user", "reset-password", "nobody@acme.example") == 2
    assert "no user with the email address" in capsys.readouterr().err
