"""Roll-ups kept at ingest: event_rollups (1 s, 1 min and 1 h buckets) replaces
hourly_aggregates, and the arm-and-time index on raw events goes (statistics no longer scan
raw events by arm). Existing events and hourly aggregates are summed into the roll-ups.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WIDTHS_US = (1_000_000, 60_000_000, 3_600_000_000)
HOUR_US = 3_600_000_000


def upgrade() -> None:
    op.create_table(
        "event_rollups",
        sa.Column("width_us", sa.BigInteger(), primary_key=True, nullable=False),
        sa.Column("bucket_us", sa.BigInteger(), primary_key=True, nullable=False),
        sa.Column("arm_id", sa.String(128), primary_key=True, nullable=False),
        sa.Column("kind", sa.String(16), primary_key=True, nullable=False),
        sa.Column("custom_name", sa.String(128), primary_key=True, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", sa.Float(), nullable=False),
    )
    # Event times are never negative (the domain's rule), so integer division is the floor.
    for width in WIDTHS_US:
        op.execute(
            "INSERT INTO event_rollups (width_us, bucket_us, arm_id, kind, custom_name, count, value_sum) "
            f"SELECT {width}, time_us / {width} * {width}, arm_id, kind, custom_name, count(*), sum(value) "
            f"FROM events GROUP BY time_us / {width} * {width}, arm_id, kind, custom_name"
        )
    # Compacted hours: before the compaction horizon, so no raw event shares their hour.
    op.execute(
        "INSERT INTO event_rollups (width_us, bucket_us, arm_id, kind, custom_name, count, value_sum) "
        f"SELECT {HOUR_US}, hour_us, arm_id, kind, custom_name, count, value_sum FROM hourly_aggregates"
    )
    op.drop_index("ix_hourly_hour", table_name="hourly_aggregates")
    op.drop_table("hourly_aggregates")
    op.drop_index("ix_events_arm_time", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_arm_time", "events", ["arm_id", "time_us"])
    op.create_table(
        "hourly_aggregates",
        sa.Column("arm_id", sa.String(128), primary_key=True, nullable=False),
        sa.Column("hour_us", sa.BigInteger(), primary_key=True, nullable=False),
        sa.Column("kind", sa.String(16), primary_key=True, nullable=False),
        sa.Column("custom_name", sa.String(128), primary_key=True, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("value_sum", sa.Float(), nullable=False),
    )
    op.create_index("ix_hourly_hour", "hourly_aggregates", ["hour_us"])
    # The hours before the compaction horizon were aggregates; later ones are still raw events.
    op.execute(
        "INSERT INTO hourly_aggregates (arm_id, hour_us, kind, custom_name, count, value_sum) "
        "SELECT arm_id, bucket_us, kind, custom_name, count, value_sum FROM event_rollups "
        f"WHERE width_us = {HOUR_US} AND bucket_us < "
        "COALESCE((SELECT compacted_before_us FROM compaction_state WHERE id = 1), -1)"
    )
    op.drop_table("event_rollups")
