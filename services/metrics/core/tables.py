"""The MetricsService schema (SQLModel). Times are integer microseconds since the epoch, so
that bucketing is integer division on SQLite and PostgreSQL alike. Changes go through an
Alembic migration in services/metrics/migrations; a test checks the two agree."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_time", "time_us"),
        Index("ix_events_decision", "decision_id"),
    )

    event_id: str = Field(primary_key=True, max_length=128)
    decision_id: str = Field(max_length=128)
    arm_id: str = Field(max_length=128)
    user_id: str = Field(default="", max_length=128)
    item_id: str = Field(default="", max_length=128)
    kind: str = Field(max_length=16)
    custom_name: str = Field(default="", max_length=128)
    value: float
    time_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class DecisionRow(SQLModel, table=True):
    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_time", "time_us", "decision_id"), Index("ix_decisions_arm", "arm_id"))

    decision_id: str = Field(primary_key=True, max_length=128)
    request_id: str = Field(default="", max_length=128)
    user_id: str = Field(default="", max_length=128)
    arm_id: str = Field(max_length=128)
    propensity: float
    propensity_samples: int
    item_ids: str  # JSON list
    degraded: bool
    algorithm: str = Field(default="", max_length=64)
    context: str  # JSON object
    time_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class EventRollupRow(SQLModel, table=True):
    """Events summed per time bucket of one width (1 s, 1 min, 1 h), arm, kind and custom name,
    kept at ingest in the transaction that stores the events, so that statistics read
    O(arms x buckets) rows instead of every raw event (store.py). Rows of the hour width
    outlive the raw events' retention; the finer ones are dropped with them."""

    __tablename__ = "event_rollups"

    # The key's order serves the reads: one width, a range of buckets, then the arms.
    width_us: int = Field(sa_column=Column(BigInteger, primary_key=True))
    bucket_us: int = Field(sa_column=Column(BigInteger, primary_key=True))
    arm_id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(primary_key=True, max_length=16)
    custom_name: str = Field(default="", primary_key=True, max_length=128)
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
    value_sum: float


class CompactionStateRow(SQLModel, table=True):
    """One row: events before ``compacted_before_us`` live only in the hourly roll-ups."""

    __tablename__ = "compaction_state"

    id: int = Field(default=1, primary_key=True)
    compacted_before_us: int = Field(sa_column=Column(BigInteger, nullable=False))
