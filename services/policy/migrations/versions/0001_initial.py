"""PolicyService schema as it was before migrations: arms, decisions, feedback ids, outbox,
counters, settings (databases made then are stamped with this revision).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _required(name: str, kind: sa.types.TypeEngine, **kwargs: object) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, kind, nullable=False, **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "policy_arms",
        sa.Column("arm_id", sa.String(128), primary_key=True),
        _required("strategy", sa.String(64)),
        _required("params", sa.Text()),
        _required("configuration_hash", sa.String(64), unique=True),
        _required("origin", sa.String(32)),
        _required("state", sa.String(16)),
        _required("exposure_cap", sa.Float()),
        _required("created_at", sa.Float()),
        _required("updated_at", sa.Float()),
        _required("state_reason", sa.Text()),
        _required("impressions", sa.Float()),
        _required("reward", sa.Float()),
        _required("clicks", sa.Integer()),
        _required("conversions", sa.Integer()),
        _required("step", sa.Integer()),
    )
    op.create_table(
        "policy_decisions",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        _required("request_id", sa.String(128), unique=True),
        _required("user_id", sa.String(128)),
        _required("arm_id", sa.String(128)),
        _required("propensity", sa.Float()),
        _required("propensity_samples", sa.Integer()),
        _required("items", sa.Text()),
        _required("degraded", sa.Boolean()),
        _required("degraded_reason", sa.Text()),
        _required("algorithm", sa.String(32)),
        _required("context", sa.Text()),
        _required("created_at", sa.Float()),
    )
    op.create_index("ix_policy_decisions_created_at", "policy_decisions", ["created_at"])
    op.create_table(
        "policy_feedback",
        sa.Column("event_id", sa.String(128), primary_key=True),
        _required("decision_id", sa.String(64)),
        _required("created_at", sa.Float()),
    )
    op.create_index("ix_policy_feedback_created_at", "policy_feedback", ["created_at"])
    op.create_table(
        "policy_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _required("kind", sa.String(16)),
        _required("payload", sa.Text()),
        _required("attempts", sa.Integer()),
    )
    op.create_table(
        "policy_counters",
        sa.Column("name", sa.String(32), primary_key=True),
        _required("value", sa.Integer()),
    )
    op.create_table(
        "policy_settings",
        sa.Column("id", sa.Integer(), primary_key=True),
        _required("payload", sa.Text()),
    )


def downgrade() -> None:
    for table in ("policy_settings", "policy_counters", "policy_outbox", "policy_feedback", "policy_decisions"):
        op.drop_table(table)
    op.drop_table("policy_arms")
