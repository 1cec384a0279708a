"""erasure redactions first: ahead of a retention backlog

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = sa.text("status = 'pending' AND erasure")


def upgrade() -> None:
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        # Rows queued before this revision came from erasures only (retention's from 0007
        # may be among them; going first once does no harm).
        batch_op.add_column(
            sa.Column("erasure", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        batch_op.alter_column("erasure", server_default=None)
        batch_op.create_index(
            "ix_redaction_erasure_due",
            ["next_at"],
            unique=False,
            postgresql_where=DUE,
            sqlite_where=DUE,
        )


def downgrade() -> None:
    with op.batch_alter_table("redaction", schema=None) as batch_op:
        batch_op.drop_index("ix_redaction_erasure_due", postgresql_where=DUE, sqlite_where=DUE)
        batch_op.drop_column("erasure")
