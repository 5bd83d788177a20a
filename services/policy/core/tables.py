"""PolicyService's tables and how a row maps to a domain value and back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text, bindparam, insert, update

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.events import Decision, ScoredItem
from services.common.migrations import Schema
from services.policy.core.model import Arm

metadata = MetaData()
arms = Table(
    "policy_arms",
    metadata,
    Column("arm_id", String(128), primary_key=True),
    Column("strategy", String(64), nullable=False),
    Column("params", Text, nullable=False),
    Column("configuration_hash", String(64), nullable=False, unique=True),
    Column("origin", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("exposure_cap", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("state_reason", Text, nullable=False),
    Column("impressions", Float, nullable=False),
    Column("reward", Float, nullable=False),
    Column("clicks", Integer, nullable=False),
    Column("conversions", Integer, nullable=False),
    Column("step", Integer, nullable=False),
)
decisions = Table(
    "policy_decisions",
    metadata,
    Column("decision_id", String(64), primary_key=True),
    Column("request_id", String(128), nullable=False, unique=True),
    Column("user_id", String(128), nullable=False),
    Column("arm_id", String(128), nullable=False),
    Column("propensity", Float, nullable=False),
    Column("propensity_samples", Integer, nullable=False),
    Column("items", Text, nullable=False),
    Column("degraded", Boolean, nullable=False),
    Column("degraded_reason", Text, nullable=False),
    Column("algorithm", String(32), nullable=False),
    Column("context", Text, nullable=False),
    Column("created_at", Float, nullable=False, index=True),
    # False until the decision and its impression reached MetricsService: the decision row is
    # its own outbox entry, which keeps Recommend at one row written per request.
    Column("forwarded", Boolean, nullable=False, index=True),
)
feedback = Table(
    "policy_feedback",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("decision_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False, index=True),
)
outbox = Table(
    "policy_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "event" or "interaction" (older rows: "decision")
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=True),  # when queued; NULL for rows older than migration 0004
)
# Every promotion with the champion it replaced: what `rollback` puts back. A rolled-back row
# is skipped by the next rollback, so rollbacks walk back through the promotions in turn.
promotions = Table(
    "policy_promotions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("arm_id", String(128), nullable=False),
    Column("previous_arm_id", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("promoted_at", Float, nullable=False),
    Column("rolled_back", Boolean, nullable=False, default=False),
)
# Outbox rows a receiver refused as invalid, with its reason: counted, inspectable, replayable.
dead_letters = Table(
    "policy_dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "decision", "event" or "interaction"
    Column("payload", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
counters = Table(
    "policy_counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)
settings_table = Table(
    "policy_settings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("payload", Text, nullable=False),
)


def arm_of(row: Any) -> Arm:
    return Arm(
        arm_id=row.arm_id,
        configuration=Configuration(row.strategy, json.loads(row.params)),
        configuration_hash=row.configuration_hash,
        origin=ArmOrigin(row.origin),
        state=ArmState(row.state),
        exposure_cap=row.exposure_cap,
        created_at=row.created_at,
        updated_at=row.updated_at,
        state_reason=row.state_reason,
        impressions=row.impressions,
        reward=row.reward,
        clicks=row.clicks,
        conversions=row.conversions,
        step=row.step,
    )


def arm_row(arm: Arm) -> dict[str, Any]:
    return {
        "arm_id": arm.arm_id,
        "strategy": arm.configuration.strategy,
        "params": json.dumps(arm.configuration.params, sort_keys=True),
        "configuration_hash": arm.configuration_hash,
        "origin": arm.origin.value,
        "state": arm.state.value,
        "exposure_cap": arm.exposure_cap,
        "created_at": arm.created_at,
        "updated_at": arm.updated_at,
        "state_reason": arm.state_reason,
        "impressions": arm.impressions,
        "reward": arm.reward,
        "clicks": arm.clicks,
        "conversions": arm.conversions,
        "step": arm.step,
    }


def decision_of(row: Any) -> Decision:
    return Decision(
        decision_id=row.decision_id,
        request_id=row.request_id,
        user_id=row.user_id,
        arm_id=row.arm_id,
        propensity=row.propensity,
        propensity_samples=row.propensity_samples,
        items=tuple(_item(stored) for stored in json.loads(row.items)),
        degraded=row.degraded,
        degraded_reason=row.degraded_reason,
        algorithm=row.algorithm,
        context=json.loads(row.context),
        time=row.created_at,
    )


def _item(stored: Any) -> ScoredItem:
    # Rows written before items were stored as lists hold objects.
    return ScoredItem(**stored) if isinstance(stored, dict) else ScoredItem(*stored)


def decision_head(decision: Decision) -> dict[str, Any]:
    """Who was served by which arm with what probability: the fields every stored form of a
    decision (its row, an outbox or dead-letter payload) spells the same way."""
    return {
        "decision_id": decision.decision_id,
        "request_id": decision.request_id,
        "user_id": decision.user_id,
        "arm_id": decision.arm_id,
        "propensity": decision.propensity,
        "propensity_samples": decision.propensity_samples,
    }


def decision_row(decision: Decision) -> dict[str, Any]:
    # Built by hand rather than with dataclasses.asdict: this runs once per Recommend. Items
    # are [item_id, score, probability, rank] lists, which encode faster than objects.
    items = [[item.item_id, item.score, item.probability, item.rank] for item in decision.items]
    return {
        **decision_head(decision),
        "items": json.dumps(items),
        "degraded": decision.degraded,
        "degraded_reason": decision.degraded_reason,
        "algorithm": decision.algorithm,
        "context": json.dumps(decision.context, sort_keys=True),
        "created_at": decision.time,
        "forwarded": False,
    }


# Statements on the request path, built once: building one costs more than running it.
INSERT_DECISION = insert(decisions)
ADD_STEPS = (
    update(counters)
    .where(counters.c.name == "step")
    .values(value=counters.c.value + bindparam("added"))
    .returning(counters.c.value)
)
ADD_TO_ARM = (
    update(arms)
    .where(arms.c.arm_id == bindparam("target"))
    .values(
        impressions=arms.c.impressions + bindparam("add_impressions"),
        reward=arms.c.reward + bindparam("add_reward"),
        clicks=arms.c.clicks + bindparam("add_clicks"),
        conversions=arms.c.conversions + bindparam("add_conversions"),
        step=bindparam("new_step"),
    )
)


SCHEMA = Schema(
    Path(__file__).resolve().parent.parent / "migrations",
    metadata,
    "policy_alembic_version",
    legacy_table="policy_arms",  # made with create_all before migrations: the schema of 0001
    legacy_revision="0001",
)
