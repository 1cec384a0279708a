"""tallies: message and reply counts per quarter hour, kept by triggers, for the overview

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 13:00:00.000000

Every insert, delete, or change of a counted column writes a +1/-1 change row from a
trigger: no code path can miss one, bulk updates included. The changes are appended,
never updated in place, so concurrent transactions never wait for (or deadlock on) a
shared count; the worker folds them in (`notifier.store.tally.fold`).

SQLite drops a table's triggers when a batch migration recreates the table: a later
migration that alters `message` or `reply` in batch mode must create them again
(`create_triggers`). `tests/store/test_tally.py` checks they exist at head.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import notifier.store.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGE = ("kind", "status", "channel", "step")
MESSAGE_WATCHED = ("send_at", *MESSAGE)
REPLY_WATCHED = ("received_at", "patient_id", "after_step")


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def _run(sql: str) -> None:
    """One statement as written: trigger bodies hold colons that are not parameters."""
    op.get_bind().exec_driver_sql(sql)


def quarter(at: str) -> str:
    """The quarter hour (UTC) an instant falls in, as the dialect writes timestamps."""
    if op.get_bind().dialect.name == "postgresql":
        return f"date_bin('15 minutes', {at}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
    # SQLite keeps UTC as text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
    minute = f"printf('%02d', CAST(strftime('%M', {at}) AS INTEGER) / 15 * 15)"
    return f"strftime('%Y-%m-%d %H:', {at}) || {minute} || ':00.000000'"


def _message_values(row: str, n: int) -> str:
    return f"({quarter(f'{row}.send_at')}, {', '.join(f'{row}.{c}' for c in MESSAGE)}, {n})"


def _reply_values(row: str, n: int) -> str:
    return f"({quarter(f'{row}.received_at')}, {row}.after_step, {n})"


def _changed(columns: Sequence[str], differs: str = "IS DISTINCT FROM") -> str:
    # Only this file's own column names go into it, never input.
    return " OR ".join(f"OLD.{c} {differs} NEW.{c}" for c in columns)


def _reply_counted(row: str) -> str:
    """A reply is counted once it is a known patient's, after a step of their plan."""
    return f"{row}.patient_id IS NOT NULL AND {row}.after_step IS NOT NULL"


def create_triggers() -> None:
    message = "INSERT INTO messagetallychange (quarter, kind, status, channel, step, n) VALUES "
    reply = "INSERT INTO replytallychange (quarter, step, n) VALUES "
    new_reply, old_reply = _reply_counted("NEW"), _reply_counted("OLD")
    watched = ", ".join(MESSAGE_WATCHED)
    if op.get_bind().dialect.name == "postgresql":
        _run(f"""
            CREATE FUNCTION message_tally_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP IN ('UPDATE', 'DELETE') THEN
                    {message} {_message_values("OLD", -1)};
                END IF;
                IF TG_OP IN ('UPDATE', 'INSERT') THEN
                    {message} {_message_values("NEW", 1)};
                END IF;
                RETURN NULL;
            END $$""")
        _run(f"""
            CREATE FUNCTION reply_tally_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP IN ('UPDATE', 'DELETE') AND {old_reply} THEN
                    {reply} {_reply_values("OLD", -1)};
                END IF;
                IF TG_OP IN ('UPDATE', 'INSERT') AND {new_reply} THEN
                    {reply} {_reply_values("NEW", 1)};
                END IF;
                RETURN NULL;
            END $$""")
        _run("""
            CREATE TRIGGER message_tally AFTER INSERT OR DELETE ON message
            FOR EACH ROW EXECUTE FUNCTION message_tally_change()""")
        _run(f"""
            CREATE TRIGGER message_tally_update AFTER UPDATE OF {watched} ON message
            FOR EACH ROW WHEN ({_changed(MESSAGE_WATCHED)})
            EXECUTE FUNCTION message_tally_change()""")
        _run("""
            CREATE TRIGGER reply_tally AFTER INSERT OR DELETE ON reply
            FOR EACH ROW EXECUTE FUNCTION reply_tally_change()""")
        _run(f"""
            CREATE TRIGGER reply_tally_update
            AFTER UPDATE OF {", ".join(REPLY_WATCHED)} ON reply
            FOR EACH ROW WHEN ({_changed(REPLY_WATCHED)})
            EXECUTE FUNCTION reply_tally_change()""")
        return
    # SQLite: one trigger per operation; IS NOT is its IS DISTINCT FROM.
    sqlite_changed = _changed(MESSAGE_WATCHED, "IS NOT")
    reply_changed = _changed(REPLY_WATCHED, "IS NOT")
    _run(f"""
        CREATE TRIGGER message_tally_insert AFTER INSERT ON message
        BEGIN {message} {_message_values("NEW", 1)}; END""")
    _run(f"""
        CREATE TRIGGER message_tally_delete AFTER DELETE ON message
        BEGIN {message} {_message_values("OLD", -1)}; END""")
    _run(f"""
        CREATE TRIGGER message_tally_update AFTER UPDATE OF {watched} ON message
        WHEN {sqlite_changed}
        BEGIN
            {message} {_message_values("OLD", -1)};
            {message} {_message_values("NEW", 1)};
        END""")
    _run(f"""
        CREATE TRIGGER reply_tally_insert AFTER INSERT ON reply WHEN {new_reply}
        BEGIN {reply} {_reply_values("NEW", 1)}; END""")
    _run(f"""
        CREATE TRIGGER reply_tally_delete AFTER DELETE ON reply WHEN {old_reply}
        BEGIN {reply} {_reply_values("OLD", -1)}; END""")
    _run(f"""
        CREATE TRIGGER reply_tally_update_old
        AFTER UPDATE OF {", ".join(REPLY_WATCHED)} ON reply
        WHEN ({reply_changed}) AND {old_reply}
        BEGIN {reply} {_reply_values("OLD", -1)}; END""")
    _run(f"""
        CREATE TRIGGER reply_tally_update_new
        AFTER UPDATE OF {", ".join(REPLY_WATCHED)} ON reply
        WHEN ({reply_changed}) AND {new_reply}
        BEGIN {reply} {_reply_values("NEW", 1)}; END""")


def drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in (
            ("message_tally", "message"),
            ("message_tally_update", "message"),
            ("reply_tally", "reply"),
            ("reply_tally_update", "reply"),
        ):
            _run(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        _run("DROP FUNCTION IF EXISTS message_tally_change()")
        _run("DROP FUNCTION IF EXISTS reply_tally_change()")
        return
    for trigger in (
        "message_tally_insert",
        "message_tally_delete",
        "message_tally_update",
        "reply_tally_insert",
        "reply_tally_delete",
        "reply_tally_update_old",
        "reply_tally_update_new",
    ):
        _run(f"DROP TRIGGER IF EXISTS {trigger}")


def upgrade() -> None:
    def message_columns() -> list[sa.Column[object]]:
        return [
            sa.Column("kind", _text(16), nullable=False),
            sa.Column("status", _text(16), nullable=False),
            sa.Column("channel", _text(16), nullable=False),
            sa.Column("step", _text(64), nullable=False),
            sa.Column("n", sa.Integer(), nullable=False),
        ]

    op.create_table(
        "messagetally",
        sa.Column("quarter", notifier.store.db.UTCDateTime(), nullable=False),
        *message_columns(),
        sa.PrimaryKeyConstraint("quarter", "kind", "status", "channel", "step"),
    )
    op.create_table(
        "messagetallychange",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("quarter", notifier.store.db.UTCDateTime(), nullable=False),
        *message_columns(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "replytally",
        sa.Column("quarter", notifier.store.db.UTCDateTime(), nullable=False),
        sa.Column("step", _text(64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("quarter", "step"),
    )
    op.create_table(
        "replytallychange",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("quarter", notifier.store.db.UTCDateTime(), nullable=False),
        sa.Column("step", _text(64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # What is already stored is counted once, here, in the same transaction that
    # creates the triggers: nothing written meanwhile is counted twice or missed.
    create_triggers()
    key = ", ".join(MESSAGE)
    _run(f"""
        INSERT INTO messagetally (quarter, {key}, n)
        SELECT {quarter("send_at")}, {key}, count(*) FROM message
        GROUP BY {quarter("send_at")}, {key}""")  # noqa: S608 - this file's own names
    _run(f"""
        INSERT INTO replytally (quarter, step, n)
        SELECT {quarter("received_at")}, after_step, count(*) FROM reply
        WHERE {_reply_counted("reply")}
        GROUP BY {quarter("received_at")}, after_step""")  # noqa: S608 - this file's own names


def downgrade() -> None:
    drop_triggers()
    op.drop_table("replytallychange")
    op.drop_table("replytally")
    op.drop_table("messagetallychange")
    op.drop_table("messagetally")
