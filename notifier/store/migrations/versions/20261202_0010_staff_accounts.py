"""staff accounts: the dashboard's sign-ins, their throttle, and the indexes its pages read

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 11:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import notifier.store.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNHANDLED = sa.text("NOT handled")
UNHANDLED_SQLITE = sa.text("handled = 0")  # as SQLAlchemy writes `not_(handled)` there
PROBLEMS = sa.text("status IN ('failed', 'undelivered', 'expired')")


def upgrade() -> None:
    op.create_table(
        "staffaccount",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("created_at", notifier.store.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", notifier.store.db.UTCDateTime(), nullable=False),
        sa.Column("last_login_at", notifier.store.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "loginthrottle",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", notifier.store.db.UTCDateTime(), nullable=False),
        sa.Column("blocked_until", notifier.store.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reply_inbox",
            ["urgent", "received_at", "id"],
            unique=False,
            postgresql_where=UNHANDLED,
            sqlite_where=UNHANDLED_SQLITE,
        )
        batch_op.create_index(
            "ix_reply_urgent_newest", ["urgent", "received_at", "id"], unique=False
        )
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_problems",
            ["updated_at", "status", "error_code"],
            unique=False,
            postgresql_where=PROBLEMS,
            sqlite_where=PROBLEMS,
        )


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_problems", postgresql_where=PROBLEMS, sqlite_where=PROBLEMS)
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.drop_index("ix_reply_urgent_newest")
        batch_op.drop_index(
            "ix_reply_inbox", postgresql_where=UNHANDLED, sqlite_where=UNHANDLED_SQLITE
        )
    op.drop_table("loginthrottle")
    op.drop_table("staffaccount")
