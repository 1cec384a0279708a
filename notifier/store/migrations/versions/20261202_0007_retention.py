"""retention: walk the kept texts by last change; redactions of replies from no patient

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = sa.text("body IS NOT NULL")
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_retention",
            ["updated_at", "id"],
            unique=False,
            postgresql_where=KEPT,
            sqlite_where=KEPT,
        )
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reply_retention",
            ["received_at", "id"],
            unique=False,
            postgresql_where=KEPT,
            sqlite_where=KEPT,
        )
    # A reply from a number no patient had is redacted at Twilio too, for no patient.
    # SQLite copies the table to change a column; its partial index is made anew after.
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        batch_op.drop_index("ix_redaction_due", postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.alter_column("patient_id", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        batch_op.create_index(
            "ix_redaction_due",
            ["next_at"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )


def downgrade() -> None:
    # The previous release cannot hold a redaction for no patient: those are forgotten.
    op.execute("DELETE FROM redaction WHERE patient_id IS NULL")
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        batch_op.drop_index("ix_redaction_due", postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.alter_column("patient_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        batch_op.create_index(
            "ix_redaction_due",
            ["next_at"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.drop_index("ix_reply_retention")
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_retention")
