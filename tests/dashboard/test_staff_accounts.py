"""`aftercare staff add|list|remove|password`: accounts made at the command line, bad
input refused with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlmodel import Session

from notifier.cli import main
from notifier.staff import accounts
from tests.conftest import START
from tests.support.command import aftercare

PASSWORD = "a long enough password"


@pytest.fixture
def staff_cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*args: str, stdin: str | None = None) -> Result:
        return CliRunner().invoke(main, ["staff", *args], input=stdin)

    return run


def verified(engine: Any, name: str, password: str) -> bool:
    with Session(engine) as session:
        return accounts.verify(session, name, password, START) is not None


def test_add_asks_for_the_password_twice_without_echoing_it(staff_cli: Any, engine: Any) -> None:
    result = staff_cli("add", "amira", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "account 'amira' created" in result.output
    assert PASSWORD not in result.output
    assert verified(engine, "amira", PASSWORD)


def test_add_refuses_a_password_typed_differently_the_second_time(staff_cli: Any) -> None:
    result = staff_cli("add", "amira", stdin=f"{PASSWORD}\nsomething else entirely\n" * 2)
    assert "do not match" in result.output


def test_add_reads_the_password_from_stdin_when_asked(staff_cli: Any, engine: Any) -> None:
    result = staff_cli("add", "amira", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert verified(engine, "amira", PASSWORD)


@pytest.mark.parametrize(
    ("name", "password", "says"),
    [
        ("amira", "short", "at least 12 characters"),
        ("no spaces", PASSWORD, "is not a usable name"),
        ("x" * 65, PASSWORD, "is not a usable name"),
        ("amira", "", "at least 12 characters"),
    ],
)
def test_add_refuses_bad_input_with_one_line(
    staff_cli: Any, name: str, password: str, says: str
) -> None:
    result = staff_cli("add", name, "--password-stdin", stdin=password + "\n")
    assert result.exit_code == 1
    assert says in result.output
    assert "Traceback" not in result.output


def test_add_refuses_a_name_taken(staff_cli: Any) -> None:
    staff_cli("add", "amira", "--password-stdin", stdin=PASSWORD)
    again = staff_cli("add", "amira", "--password-stdin", stdin=PASSWORD)
    assert again.exit_code == 1
    assert "already an account named 'amira'" in again.output


def test_list_password_and_remove(staff_cli: Any, engine: Any) -> None:
    assert "no accounts yet" in staff_cli("list").output
    staff_cli("add", "amira", "--password-stdin", stdin=PASSWORD)
    staff_cli("add", "boris", "--password-stdin", stdin=PASSWORD)
    listed = staff_cli("list").output.splitlines()
    assert [line.split("\t")[0] for line in listed] == ["amira", "boris"]
    assert "last sign-in never" in listed[0]
    changed = staff_cli("password", "amira", "--password-stdin", stdin="another long password")
    assert changed.exit_code == 0, changed.output
    assert verified(engine, "amira", "another long password")
    assert not verified(engine, "amira", PASSWORD)
    assert staff_cli("remove", "boris").exit_code == 0
    assert [line.split("\t")[0] for line in staff_cli("list").output.splitlines()] == ["amira"]


@pytest.mark.parametrize(
    "command", [("remove", "ghost"), ("password", "ghost", "--password-stdin")]
)
def test_an_unknown_account_is_a_clear_error(staff_cli: Any, command: tuple[str, ...]) -> None:
    result = staff_cli(*command, stdin=PASSWORD)
    assert result.exit_code == 1
    assert "no account named 'ghost'" in result.output


def test_the_installed_command_creates_an_account(sqlite_url: str, engine: Any) -> None:
    result = aftercare(
        "staff",
        "add",
        "amira",
        "--password-stdin",
        env={"DATABASE_URL": sqlite_url},
        stdin=PASSWORD,
    )
    assert result.returncode == 0, result.stderr
    missing = aftercare("staff", "list", env={"DATABASE_URL": "mysql://nope"})
    assert missing.returncode == 1
    assert "configuration error: DATABASE_URL" in missing.stderr
    assert "Traceback" not in missing.stderr
