"""reply and stop steps: the plan step each reply and opt-out followed, for the overview

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STOPPED = {"postgresql_where": sa.text("NOT consented"), "sqlite_where": sa.text("consented = 0")}


def _last_step(table: str, at: str) -> str:
    """The step of the last plan message the patient had been sent by the row's time."""
    # Only this file's own table and column names go into it, never input.
    return f"""(
        SELECT m.step FROM message m
        WHERE m.patient_id = {table}.patient_id AND m.kind = 'plan'
          AND m.status IN ('queued', 'sent', 'delivered', 'undelivered', 'read')
          AND m.send_at <= {table}.{at}
        ORDER BY m.send_at DESC, m.id DESC LIMIT 1)"""  # noqa: S608


def upgrade() -> None:
    for table in ("reply", "consentchange"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("after_step", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
            )
    # The rows already stored get theirs once, here.
    replies = _last_step("reply", "received_at")
    stops = _last_step("consentchange", "at")
    op.execute(f"UPDATE reply SET after_step = {replies} WHERE patient_id IS NOT NULL")  # noqa: S608
    op.execute(f"UPDATE consentchange SET after_step = {stops} WHERE NOT consented")  # noqa: S608
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.create_index("ix_reply_received_step", ["received_at", "after_step"])
    with op.batch_alter_table("consentchange", schema=None) as batch_op:
        batch_op.create_index("ix_consentchange_stops", ["at", "after_step"], **STOPPED)


def downgrade() -> None:
    with op.batch_alter_table("consentchange", schema=None) as batch_op:
        batch_op.drop_index("ix_consentchange_stops", **STOPPED)
        batch_op.drop_column("after_step")
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.drop_index("ix_reply_received_step")
        batch_op.drop_column("after_step")
