"""The database engine, sessions and the UTC-aware datetime column type."""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Connection, DateTime, Engine, String, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session


class UTCDateTime(TypeDecorator[datetime]):
    """Stores instants in UTC and always hands back timezone-aware UTC datetimes.

    SQLite keeps no offset, so a naive value is refused on the way in (it is a bug:
    every time in this service is aware) and UTC is attached on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


E = TypeVar("E", bound=StrEnum)


class EnumText(TypeDecorator[E]):
    """A `StrEnum` stored as its text (a VARCHAR, no database enum type to migrate):
    a value outside the enum is refused on the way in, and rows come back as members."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


def make_engine(url: str) -> Engine:
    """An engine tuned for the service: WAL, a busy timeout and explicit BEGINs on SQLite.

    SQL parameters are never put into error messages (`hide_parameters`): they carry
    phone numbers, names and message texts, and errors end up in logs."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN is turned off: `_sqlite_begin` says which kind.
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """A writing transaction takes SQLite's write lock when it starts (BEGIN IMMEDIATE):
    one that read first and then tried to write could only fail with "database is
    locked" when another writer got in between. Reads begin deferred and never wait."""
    immediate = connection.get_execution_options().get(_WRITES, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_WRITES = "aftercare_writes"


class TurnLock:
    """A lock the threads of a process get in the order they asked for it.

    `threading.Lock` lets a thread that just arrived overtake one that has waited, so
    under a steady stream of writers a few wait far longer than the rest. Here each
    waiter queues and is handed the lock by the one before. Re-entrant for its holder."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._queue: deque[threading.Event] = deque()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, timeout: float) -> bool:
        me = threading.get_ident()
        with self._guard:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None and not self._queue:
                self._owner, self._depth = me, 1
                return True
            turn = threading.Event()
            self._queue.append(turn)
        granted = turn.wait(timeout)
        with self._guard:
            if not granted and not turn.is_set():
                self._queue.remove(turn)
                return False
            self._owner, self._depth = me, 1  # handed over by `release`
            return True

    def release(self) -> None:
        with self._guard:
            self._depth -= 1
            if self._depth:
                return
            self._owner = None
            if self._queue:
                self._owner = -1  # reserved for the next in line until it wakes
                self._queue.popleft().set()


_WRITE_LOCKS: dict[str, TurnLock] = {}
_WRITERS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()
WRITE_LOCK_TIMEOUT = 30.0  # seconds, as SQLite's busy timeout


class DatabaseBusy(OperationalError):
    """No write transaction could start in time: another one held the database."""


@contextmanager
def _one_writer(engine: Engine) -> Iterator[Engine]:
    """On SQLite, the threads of a process take turns to write, in a Python lock.

    SQLite lets one writer in at a time; the others sleep in its busy handler, which
    polls with growing sleeps and lets a lucky newcomer overtake a writer that has
    waited for a second. Waiting in a lock instead hands the database to the next
    writer as soon as the last one commits. Other processes still meet in SQLite's
    own lock (BEGIN IMMEDIATE waits there up to the busy timeout)."""
    if engine.dialect.name != "sqlite":
        yield engine
        return
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.setdefault(str(engine.url.database), TurnLock())
        writer = _WRITERS.get(engine)
        if writer is None:
            writer = _WRITERS[engine] = engine.execution_options(**{_WRITES: True})
    if not lock.acquire(timeout=WRITE_LOCK_TIMEOUT):
        raise DatabaseBusy("waiting for another write", None, Exception("write lock timeout"))
    try:
        yield writer
    finally:
        lock.release()


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits together, or not at all: the way to write.

    It holds no lock beyond itself, so nothing slow (a request to Twilio) may happen
    inside one."""
    with _one_writer(engine) as writer, Session(writer, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def reading(engine: Engine) -> Session:
    """A session for reads only: on SQLite it never waits for, or blocks, a writer."""
    return Session(engine, expire_on_commit=False)


T = TypeVar("T")


def retrying(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run `work` in a transaction; if it collides with a concurrent one (a unique key
    taken in the meantime, a deadlock, a serialization failure), run it once more.

    Booking systems and Twilio retry, sometimes into two processes at the same
    moment: the second try sees what the first committed and does nothing twice."""
    try:
        with transaction(engine) as session:
            return work(session)
    except DBAPIError as error:
        if not is_collision(error):
            raise
    with transaction(engine) as session:
        return work(session)


# SQLSTATEs of a transaction that lost to a concurrent one: unique violation,
# serialization failure, deadlock detected.
_COLLISIONS = {"23505", "40001", "40P01"}


def is_collision(error: DBAPIError) -> bool:
    """Whether `error` says another transaction got there first (worth one more try)."""
    if isinstance(error, IntegrityError) and "UNIQUE constraint failed" in str(error.orig):
        return True  # SQLite's unique violation
    return getattr(error.orig, "sqlstate", None) in _COLLISIONS
