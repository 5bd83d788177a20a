"""Durable PolicyService state in SQL (SQLite file or PostgreSQL): arms with their beliefs,
decisions inside the reward window, feedback ids, the outbox to MetricsService, settings.

Every call that changes state commits before the RPC is acknowledged. Counts live in the
database, so several replicas behind one PostgreSQL share them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from services.policy.core.model import (
    Arm,
    ArmOrigin,
    ArmState,
    Configuration,
    Decision,
    GuardrailSettings,
    PolicySettings,
    RecommendedItem,
)

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
    Column("kind", String(16), nullable=False),  # "decision" or "event"
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
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


def _arm(row: Any) -> Arm:
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


def _arm_row(arm: Arm) -> dict[str, Any]:
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


def _decision(row: Any) -> Decision:
    return Decision(
        decision_id=row.decision_id,
        request_id=row.request_id,
        user_id=row.user_id,
        arm_id=row.arm_id,
        propensity=row.propensity,
        propensity_samples=row.propensity_samples,
        items=tuple(RecommendedItem(**item) for item in json.loads(row.items)),
        degraded=row.degraded,
        degraded_reason=row.degraded_reason,
        algorithm=row.algorithm,
        context=json.loads(row.context),
        created_at=row.created_at,
    )


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)
        # SQLite takes one writer at a time, and a writer that finds the file locked backs
        # off by sleeping; queueing writers on a lock in this process instead keeps tail
        # latency low. PostgreSQL has row locks and needs none.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (serialised in this process on SQLite)."""
        with self._write_lock, self.engine.begin() as connection:
            yield connection

    # -- arms ----------------------------------------------------------------------------

    def arms(self, connection: Connection | None = None) -> list[Arm]:
        """Every arm; inside a transaction pass its connection (no second connection from the pool)."""
        if connection is None:
            with self.engine.connect() as own:
                return self.arms(own)
        return [_arm(row) for row in connection.execute(select(arms).order_by(arms.c.created_at, arms.c.arm_id))]

    def arm(self, connection: Connection, arm_id: str) -> Arm | None:
        row = connection.execute(select(arms).where(arms.c.arm_id == arm_id)).first()
        return None if row is None else _arm(row)

    def insert_arm(self, arm: Arm) -> bool:
        """False when the id or the configuration is taken (the caller says which)."""
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(arms).values(**_arm_row(arm)))
        except IntegrityError:
            return False
        return True

    def save_arms(self, connection: Connection, changed: Sequence[Arm]) -> None:
        for arm in changed:
            connection.execute(update(arms).where(arms.c.arm_id == arm.arm_id).values(**_arm_row(arm)))

    # -- steps, decisions, feedback ----------------------------------------------------------

    def next_step(self, connection: Connection) -> int:
        """Count one decision; returns the new step (one statement once the row exists)."""
        bumped = connection.execute(
            update(counters)
            .where(counters.c.name == "step")
            .values(value=counters.c.value + 1)
            .returning(counters.c.value)
        ).scalar()
        if bumped is None:
            connection.execute(insert(counters).values(name="step", value=1))
            return 1
        return int(bumped)

    def current_step(self, connection: Connection | None = None) -> int:
        if connection is None:
            with self.engine.connect() as own:
                return self.current_step(own)
        value = connection.execute(select(counters.c.value).where(counters.c.name == "step")).scalar()
        return int(value or 0)

    def decision_by_request(self, request_id: str) -> Decision | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(decisions).where(decisions.c.request_id == request_id)).first()
        return None if row is None else _decision(row)

    def decision(self, connection: Connection, decision_id: str) -> Decision | None:
        row = connection.execute(select(decisions).where(decisions.c.decision_id == decision_id)).first()
        return None if row is None else _decision(row)

    def insert_decision(self, connection: Connection, decision: Decision) -> None:
        values = dataclasses.asdict(decision)
        values["items"] = json.dumps(values["items"])
        values["context"] = json.dumps(values["context"], sort_keys=True)
        connection.execute(insert(decisions).values(**values))

    def record_feedback_id(self, connection: Connection, event_id: str, decision_id: str) -> bool:
        """False when the event was recorded before."""
        if connection.execute(select(feedback.c.event_id).where(feedback.c.event_id == event_id)).first():
            return False
        connection.execute(insert(feedback).values(event_id=event_id, decision_id=decision_id, created_at=time.time()))
        return True

    def forget_before(self, cutoff: float) -> None:
        """Decisions and feedback ids older than the reward window are no longer needed."""
        with self.engine.begin() as connection:
            connection.execute(delete(decisions).where(decisions.c.created_at < cutoff))
            connection.execute(delete(feedback).where(feedback.c.created_at < cutoff))

    # -- outbox ----------------------------------------------------------------------------------

    def enqueue(self, connection: Connection, kind: str, payload: dict[str, Any]) -> None:
        self.enqueue_many(connection, [(kind, payload)])

    def enqueue_many(self, connection: Connection, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        connection.execute(
            insert(outbox), [{"kind": kind, "payload": json.dumps(payload), "attempts": 0} for kind, payload in rows]
        )

    def pending(self, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(outbox).order_by(outbox.c.id).limit(limit))
            return [(row.id, row.kind, json.loads(row.payload)) for row in rows]

    def delivered(self, ids: Sequence[int]) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(outbox).where(outbox.c.id.in_(list(ids))))

    def failed_attempt(self, ids: Sequence[int]) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(outbox).where(outbox.c.id.in_(list(ids))).values(attempts=outbox.c.attempts + 1))

    # -- settings ------------------------------------------------------------------------------

    def settings(self) -> PolicySettings:
        with self.engine.connect() as connection:
            payload = connection.execute(select(settings_table.c.payload).where(settings_table.c.id == 1)).scalar()
        if payload is None:
            return PolicySettings()
        values = json.loads(payload)
        values["guardrail"] = GuardrailSettings(**values["guardrail"])
        return PolicySettings(**values)

    def save_settings(self, settings: PolicySettings) -> None:
        payload = json.dumps(dataclasses.asdict(settings), sort_keys=True)
        with self.engine.begin() as connection:
            if connection.execute(select(settings_table.c.id).where(settings_table.c.id == 1)).first():
                connection.execute(update(settings_table).where(settings_table.c.id == 1).values(payload=payload))
            else:
                connection.execute(insert(settings_table).values(id=1, payload=payload))
