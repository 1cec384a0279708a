"""`aftercare staff`: the dashboard's accounts (add, list, remove, password)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click
from sqlalchemy import Engine
from sqlmodel import Session

from notifier.settings import ConfigError, Settings
from notifier.staff import accounts
from notifier.store import migrate
from notifier.store.db import make_engine, reading, transaction

password_stdin = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of a prompt.",
)


@click.group()
def staff() -> None:
    """Staff accounts of the dashboard (/staff/)."""


@staff.command("add")
@click.argument("name")
@password_stdin
def add(name: str, password_stdin: bool) -> None:
    """Create an account NAME; its password is asked for twice (or read from stdin)."""
    with _clear_errors():
        accounts.check_name(name)
        password = _password(password_stdin)
        _write(lambda session: accounts.create(session, name, password, _now()))
    click.echo(f"staff: account {name!r} created; sign in at /staff/login")


@staff.command("password")
@click.argument("name")
@password_stdin
def password(name: str, password_stdin: bool) -> None:
    """Set NAME's password; their open browser sessions end."""
    with _clear_errors():
        with _engine() as engine, reading(engine) as session:
            if accounts.find(session, name) is None:
                raise accounts.AccountError(f"there is no account named {name!r}")
        new = _password(password_stdin)
        _write(lambda session: accounts.set_password(session, name, new, _now()))
    click.echo(f"staff: password of {name!r} changed; their sessions have ended")


@staff.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Remove the account NAME; its sessions end at once. What they did stays recorded."""
    with _clear_errors():
        _write(lambda session: accounts.remove(session, name))
    click.echo(f"staff: account {name!r} removed")


@staff.command("list")
def listing() -> None:
    """Every account, with when it was created and last signed in."""
    with _clear_errors(), _engine() as engine, reading(engine) as session:
        found = accounts.listing(session)
    if not found:
        click.echo("staff: no accounts yet; create one with `aftercare staff add NAME`")
    for account in found:
        last = (
            account.last_login_at.isoformat(timespec="minutes")
            if account.last_login_at
            else "never"
        )
        created = account.created_at.isoformat(timespec="minutes")
        click.echo(f"{account.name}\tcreated {created}\tlast sign-in {last}")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
    else:
        line = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return accounts.check_password(line)


def _write(work: Callable[[Session], object]) -> None:
    with _engine() as engine, transaction(engine) as session:
        work(session)


@contextmanager
def _engine() -> Iterator[Engine]:
    url = Settings.from_env().database_url
    migrate.ensure_current(url)
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Bad names and passwords, configuration and an unmigrated database end the command
    with one line and exit code 1."""
    try:
        yield
    except accounts.AccountError as error:
        raise click.ClickException(str(error)) from None
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from None
    except migrate.NotMigrated as error:
        raise click.ClickException(str(error)) from None
