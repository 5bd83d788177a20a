"""Each decision is its own outbox entry: ``forwarded`` is false until MetricsService has the
decision and its impression. Decisions made before were queued in policy_outbox already,
so existing rows count as forwarded (the server default; new rows always set it).

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
    op.add_column("policy_decisions", sa.Column("forwarded", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.create_index("ix_policy_decisions_forwarded", "policy_decisions", ["forwarded"])


def downgrade() -> None:
    op.drop_index("ix_policy_decisions_forwarded", "policy_decisions")
    with op.batch_alter_table("policy_decisions") as batch:
        batch.drop_column("forwarded")
