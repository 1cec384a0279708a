"""urgent replies: triage on each reply, its photos, acknowledgements and on-call alerts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("urgent", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column(
                "category",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="other",
            )
        )
        batch_op.add_column(
            sa.Column("signs", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
        )
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.alter_column("urgent", server_default=None)
        batch_op.alter_column("category", server_default=None)
        batch_op.create_index(batch_op.f("ix_reply_urgent"), ["urgent"], unique=False)
    op.create_table(
        "replymedia",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reply_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("content_type", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.ForeignKeyConstraint(["reply_id"], ["reply.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reply_id", "position"),
    )
    with op.batch_alter_table("replymedia", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replymedia_reply_id"), ["reply_id"], unique=False)
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="plan",
            )
        )
        batch_op.add_column(sa.Column("reply_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True)
        )
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.alter_column("kind", server_default=None)
        batch_op.create_foreign_key("fk_message_reply_id_reply", "reply", ["reply_id"], ["id"])
        batch_op.create_index(batch_op.f("ix_message_reply_id"), ["reply_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_reply_id"))
        batch_op.drop_constraint("fk_message_reply_id_reply", type_="foreignkey")
        batch_op.drop_column("recipient")
        batch_op.drop_column("reply_id")
        batch_op.drop_column("kind")
    with op.batch_alter_table("replymedia", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replymedia_reply_id"))
    op.drop_table("replymedia")
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reply_urgent"))
        batch_op.drop_column("signs")
        batch_op.drop_column("category")
        batch_op.drop_column("urgent")
