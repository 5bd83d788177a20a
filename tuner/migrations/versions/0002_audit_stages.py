"""Each screened proposal's source and the stages of its multi-fidelity screen.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tuner_audit") as batch:
        batch.add_column(sa.Column("source", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("budget", sa.Float(), nullable=False, server_default="1.0"))
        batch.add_column(sa.Column("stages", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("tuner_audit") as batch:
        batch.drop_column("stages")
        batch.drop_column("budget")
        batch.drop_column("source")
