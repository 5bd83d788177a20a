"""The tuner's audit table: every proposal, screen result and arm change, with the reason.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuner_audit",
        sa.Column("entry_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("cycle_id", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("arm_id", sa.String(128), nullable=False),
        sa.Column("origin", sa.String(32), nullable=False),
        sa.Column("configuration", sa.Text(), nullable=False),
        sa.Column("configuration_hash", sa.String(64), nullable=False),
        sa.Column("ndcg", sa.Float(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
    )
    op.create_index("ix_tuner_audit_recorded_at", "tuner_audit", ["recorded_at"])


def downgrade() -> None:
    op.drop_table("tuner_audit")
