"""Fitted models kept in the database, and the leases that keep replicas from fitting the
same configuration at once.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scoring_fitted_models",
        sa.Column("configuration_hash", sa.String(64), primary_key=True),
        sa.Column("watermark", sa.Integer(), primary_key=True),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("fitted_at", sa.Float(), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "scoring_fit_leases",
        sa.Column("configuration_hash", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scoring_fit_leases")
    op.drop_table("scoring_fitted_models")
