"""Staff accounts: names, argon2id password hashes, and checking a password.

The hash is argon2id with argon2-cffi's defaults (RFC 9106's second recommendation);
a hash made with older parameters is replaced at the next successful sign-in.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from notifier.store.models import StaffAccount

NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # as the staff API's token names
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # hashing a megabyte on every attempt is a denial of service


class AccountError(Exception):
    """A name or password that cannot be used, or an account that is not there."""


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise AccountError(
            f"{name!r} is not a usable name: letters, digits, '.', '_' or '-', up to 64"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"a password may be at most {MAX_PASSWORD_LENGTH} characters long")
    return password


def find(session: Session, name: str) -> StaffAccount | None:
    return session.exec(select(StaffAccount).where(StaffAccount.name == name)).first()


def create(session: Session, name: str, password: str, now: datetime) -> StaffAccount:
    check_name(name)
    check_password(password)
    if find(session, name) is not None:
        raise AccountError(f"there is already an account named {name!r}")
    account = StaffAccount(
        name=name, password_hash=_hasher().hash(password), created_at=now, updated_at=now
    )
    session.add(account)
    session.flush()
    return account


def set_password(session: Session, name: str, password: str, now: datetime) -> StaffAccount:
    """A new password; sessions signed in with the old one end (see `session_stamp`)."""
    check_password(password)
    account = _existing(session, name)
    account.password_hash = _hasher().hash(password)
    account.updated_at = now
    session.add(account)
    return account


def remove(session: Session, name: str) -> None:
    session.delete(_existing(session, name))


def listing(session: Session) -> list[StaffAccount]:
    return list(session.exec(select(StaffAccount).order_by(col(StaffAccount.name))).all())


def verify(session: Session, name: str, password: str, now: datetime) -> StaffAccount | None:
    """The account if `password` is its password, else None. An unknown name costs the
    same time as a wrong password, so timing does not tell which names exist."""
    account = find(session, name) if NAME.match(name) else None
    if account is None or len(password) > MAX_PASSWORD_LENGTH:
        _dummy_verify(password[:MAX_PASSWORD_LENGTH])
        return None
    try:
        _hasher().verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher().check_needs_rehash(account.password_hash):
        account.password_hash = _hasher().hash(password)
    account.last_login_at = now
    session.add(account)
    return account


def session_stamp(account: StaffAccount) -> str:
    """Changes when the password does: a browser session carries it, so changing a
    password (or removing the account) signs every browser out."""
    return hashlib.sha256(account.password_hash.encode()).hexdigest()[:16]


def _existing(session: Session, name: str) -> StaffAccount:
    account = find(session, name)
    if account is None:
        raise AccountError(f"there is no account named {name!r}")
    return account


@cache
def _dummy_hash() -> str:
    return _hasher().hash("not a password anyone has")


def _dummy_verify(password: str) -> None:
    with contextlib.suppress(VerificationError):
        _hasher().verify(_dummy_hash(), password)
