"""The overview's counts of messages and replies per quarter hour, read without
scanning the outbox.

Database triggers (migration 0013) append a +1/-1 change for every row that enters,
leaves or moves between counts; `fold` adds the changes into the tallies. A read adds
the tallies and the changes not yet folded, in one statement, so it is exact whether
or not the worker has folded lately.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, text, union_all
from sqlmodel import Session, col

from notifier.store.models import (
    MessageTally,
    MessageTallyChange,
    ReplyTally,
    ReplyTallyChange,
)

# Any 64-bit number of this module's own: the PostgreSQL advisory lock a fold holds.
_FOLD_LOCK = 0x7A11_4F01D
MESSAGE_KEY = ("kind", "status", "channel", "step")


@dataclass(frozen=True)
class MessageCount:
    quarter: datetime  # the quarter hour (UTC) of the messages' send time
    kind: str
    status: str
    channel: str
    step: str
    n: int


@dataclass(frozen=True)
class ReplyCount:
    quarter: datetime  # when the replies arrived
    step: str  # the plan step the patient had been sent last
    n: int


def messages(session: Session, start: datetime, end: datetime) -> list[MessageCount]:
    """Messages whose send time falls in [start, end), counted per quarter hour, kind,
    status, channel and step."""
    rows = _sum(session, MessageTally, MessageTallyChange, ("quarter", *MESSAGE_KEY), start, end)
    return [MessageCount(**row._mapping) for row in rows]


def replies(session: Session, start: datetime, end: datetime) -> list[ReplyCount]:
    """Patients' replies that arrived in [start, end), per quarter hour and the step
    they followed."""
    rows = _sum(session, ReplyTally, ReplyTallyChange, ("quarter", "step"), start, end)
    return [ReplyCount(**row._mapping) for row in rows]


def _sum(
    session: Session,
    tally: type[MessageTally] | type[ReplyTally],
    changes: type[MessageTallyChange] | type[ReplyTallyChange],
    key: Sequence[str],
    start: datetime,
    end: datetime,
) -> Sequence[Row[Any]]:
    parts = [
        select(*(getattr(table, name) for name in key), col(table.n)).where(
            col(table.quarter) >= start, col(table.quarter) < end
        )
        for table in (tally, changes)
    ]
    both = union_all(*parts).subquery()
    columns = [both.c[name] for name in key]
    total = func.sum(both.c.n)
    statement = select(*columns, total.label("n")).group_by(*columns).having(total != 0)
    return session.execute(statement.order_by(*columns)).all()


def fold(session: Session) -> int:
    """Add the changes written since the last fold into the tallies, and forget them;
    how many changes were folded. Safe to run from several processes at once."""
    if session.get_bind().dialect.name == "postgresql":
        # A second fold would only wait on the first one's rows: it leaves them to it.
        if not session.execute(select(func.pg_try_advisory_xact_lock(_FOLD_LOCK))).scalar_one():
            return 0
        fold_table = _fold_postgresql
    else:
        fold_table = _fold_sqlite
    return fold_table(session, "messagetally", MESSAGE_KEY) + fold_table(
        session, "replytally", ("step",)
    )


def _fold_postgresql(session: Session, tally: str, key: Sequence[str]) -> int:
    # Only the rows this statement deletes are added: a change committed meanwhile
    # stays for the next fold.
    names = ", ".join(("quarter", *key))
    moved = session.execute(
        text(f"""
        WITH moved AS (DELETE FROM {tally}change RETURNING {names}, n),
        added AS (
            INSERT INTO {tally} ({names}, n)
            SELECT {names}, sum(n) FROM moved GROUP BY {names} ORDER BY {names}
            ON CONFLICT ({names}) DO UPDATE SET n = {tally}.n + excluded.n
        )
        SELECT count(*) FROM moved""")  # noqa: S608 - this module's own names
    ).scalar_one()
    session.execute(text(f"DELETE FROM {tally} WHERE n = 0"))  # noqa: S608
    return int(moved)


def _fold_sqlite(session: Session, tally: str, key: Sequence[str]) -> int:
    # A write transaction on SQLite holds the only write lock from BEGIN IMMEDIATE:
    # no change is written between these statements.
    names = ", ".join(("quarter", *key))
    session.execute(
        text(f"""
        INSERT INTO {tally} ({names}, n)
        SELECT {names}, sum(n) FROM {tally}change WHERE true GROUP BY {names}
        ON CONFLICT ({names}) DO UPDATE SET n = {tally}.n + excluded.n""")  # noqa: S608
    )
    moved = session.connection().execute(text(f"DELETE FROM {tally}change"))  # noqa: S608
    session.execute(text(f"DELETE FROM {tally} WHERE n = 0"))  # noqa: S608
    return int(moved.rowcount)
