"""Promotions and outbox ages: each promotion is recorded with the champion it replaced, so
that a rollback can put that one back; each outbox row records when it was queued, so that
the age of the oldest row waiting can be watched (older rows have none: NULL).

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_promotions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("arm_id", sa.String(128), nullable=False),
        sa.Column("previous_arm_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("promoted_at", sa.Float(), nullable=False),
        sa.Column("rolled_back", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("policy_outbox", sa.Column("created_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policy_outbox") as batch:
        batch.drop_column("created_at")
    op.drop_table("policy_promotions")
