"""ScoringService schema as it was before migrations: item vectors by encoder model and item
(databases made then are stamped with this revision).

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
        "item_vectors",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("item_id", sa.String(128), primary_key=True),
        sa.Column("text_sha", sa.String(64), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("item_vectors")
