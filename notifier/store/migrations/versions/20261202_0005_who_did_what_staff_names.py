"""who did what: staff names on consent changes and handled replies

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import notifier.store.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consentchange", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("handled_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(sa.Column("handled_at", notifier.store.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.drop_column("handled_at")
        batch_op.drop_column("handled_by")
    with op.batch_alter_table("consentchange", schema=None) as batch_op:
        batch_op.drop_column("by")
