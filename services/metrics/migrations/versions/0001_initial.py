"""Initial MetricsService schema: events, decisions, hourly aggregates, compaction state.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id(name: str, **kwargs: object) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.String(128), nullable=False, **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "events",
        _id("event_id", primary_key=True),
        _id("decision_id"),
        _id("arm_id"),
        _id("user_id"),
        _id("item_id"),
        sa.Column("kind", sa.String(16), nullable=False),
        _id("custom_name"),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("time_us", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_events_time", "events", ["time_us"])
    op.create_index("ix_events_arm_time", "events", ["arm_id", "time_us"])
    op.create_index("ix_events_decision", "events", ["decision_id"])
    op.create_table(
        "decisions",
        _id("decision_id", primary_key=True),
        _id("request_id"),
        _id("user_id"),
        _id("arm_id"),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("propensity_samples", sa.Integer(), nullable=False),
        sa.Column("item_ids", sa.String(), nullable=False),
        sa.Column("degraded", sa.Boolean(), nullable=False),
        sa.Column("algorithm", sa.String(64), nullable=False),
        sa.Column("context", sa.String(), nullable=False),
        sa.Column("time_us", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_decisions_time", "decisions", ["time_us", "decision_id"])
    op.create_index("ix_decisions_arm", "decisions", ["arm_id"])
    op.create_table(
        "hourly_aggregates",
        _id("arm_id", primary_key=True),
        sa.Column("hour_us", sa.BigInteger(), primary_key=True, nullable=False),
        sa.Column("kind", sa.String(16), primary_key=True, nullable=False),
        _id("custom_name", primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("value_sum", sa.Float(), nullable=False),
    )
    op.create_index("ix_hourly_hour", "hourly_aggregates", ["hour_us"])
    op.create_table(
        "compaction_state",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("compacted_before_us", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for index, table in (
        ("ix_hourly_hour", "hourly_aggregates"),
        ("ix_decisions_arm", "decisions"),
        ("ix_decisions_time", "decisions"),
        ("ix_events_decision", "events"),
        ("ix_events_arm_time", "events"),
        ("ix_events_time", "events"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("compaction_state", "hourly_aggregates", "decisions", "events"):
        op.drop_table(table)
