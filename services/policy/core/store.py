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
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
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
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from services.common.migrations import Schema, migrate
from services.policy.core.model import (
    Arm,
    ArmCounts,
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
        items=tuple(_item(stored) for stored in json.loads(row.items)),
        degraded=row.degraded,
        degraded_reason=row.degraded_reason,
        algorithm=row.algorithm,
        context=json.loads(row.context),
        created_at=row.created_at,
    )


def _item(stored: Any) -> RecommendedItem:
    # Rows written before items were stored as lists hold objects.
    return RecommendedItem(**stored) if isinstance(stored, dict) else RecommendedItem(*stored)


def _decision_row(decision: Decision) -> dict[str, Any]:
    # Built by hand rather than with dataclasses.asdict: this runs once per Recommend. Items
    # are [item_id, score, probability, rank] lists, which encode faster than objects.
    items = [[item.item_id, item.score, item.probability, item.rank] for item in decision.items]
    return {
        "decision_id": decision.decision_id,
        "request_id": decision.request_id,
        "user_id": decision.user_id,
        "arm_id": decision.arm_id,
        "propensity": decision.propensity,
        "propensity_samples": decision.propensity_samples,
        "items": json.dumps(items),
        "degraded": decision.degraded,
        "degraded_reason": decision.degraded_reason,
        "algorithm": decision.algorithm,
        "context": json.dumps(decision.context, sort_keys=True),
        "created_at": decision.created_at,
        "forwarded": False,
    }


# Statements on the request path, built once: building one costs more than running it.
_INSERT_DECISION = insert(decisions)
_ADD_STEPS = (
    update(counters)
    .where(counters.c.name == "step")
    .values(value=counters.c.value + bindparam("added"))
    .returning(counters.c.value)
)
_ADD_TO_ARM = (
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


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        migrate(engine, SCHEMA)
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

    def arms_and_step(self) -> tuple[list[Arm], int]:
        """Every arm and the decision count, read on one connection."""
        with self.engine.connect() as connection:
            return self.arms(connection), self.current_step(connection)

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

    def add_steps(self, connection: Connection, count: int) -> int:
        """Count decisions; returns the last new step (one statement once the row exists)."""
        bumped = connection.execute(_ADD_STEPS, {"added": count}).scalar()
        if bumped is None:
            connection.execute(insert(counters).values(name="step", value=count))
            return count
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

    def insert_decisions(self, connection: Connection, logged: Sequence[Decision]) -> None:
        """The whole group in one executemany (a taken request id raises IntegrityError)."""
        connection.execute(_INSERT_DECISION, [_decision_row(decision) for decision in logged])

    def unforwarded_decisions(self, limit: int) -> list[Decision]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(decisions).where(decisions.c.forwarded.is_(False)).order_by(decisions.c.created_at).limit(limit)
            )
            return [_decision(row) for row in rows]

    def mark_forwarded(self, decision_ids: Sequence[str]) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(decisions).where(decisions.c.decision_id.in_(list(decision_ids))).values(forwarded=True)
            )

    def add_to_arm(
        self, connection: Connection, arm_id: str, step: int, added: ArmCounts, discount: float | None
    ) -> None:
        """Add to an arm's counts as of ``step``. Without a discount that is one statement with
        the arithmetic in SQL (safe across replicas); with one, the stored beliefs decay by
        ``discount`` per step since the arm's last change, under a row lock."""
        if discount is None:
            connection.execute(
                _ADD_TO_ARM,
                {
                    "target": arm_id,
                    "new_step": step,
                    "add_impressions": added.impressions,
                    "add_reward": added.reward,
                    "add_clicks": added.clicks,
                    "add_conversions": added.conversions,
                },
            )
            return
        row = connection.execute(select(arms).where(arms.c.arm_id == arm_id).with_for_update()).first()
        if row is None:
            return
        keep = discount ** max(step - row.step, 0)
        connection.execute(
            update(arms)
            .where(arms.c.arm_id == arm_id)
            .values(
                impressions=row.impressions * keep + added.impressions,
                reward=row.reward * keep + added.reward,
                clicks=row.clicks + added.clicks,
                conversions=row.conversions + added.conversions,
                step=step,
            )
        )

    def decisions_by_id(self, connection: Connection, decision_ids: Collection[str]) -> dict[str, Decision]:
        rows = connection.execute(select(decisions).where(decisions.c.decision_id.in_(list(decision_ids))))
        return {row.decision_id: _decision(row) for row in rows}

    def recorded_feedback_ids(self, connection: Connection, event_ids: Collection[str]) -> set[str]:
        """Those of ``event_ids`` recorded before."""
        rows = connection.execute(select(feedback.c.event_id).where(feedback.c.event_id.in_(list(event_ids))))
        return {row.event_id for row in rows}

    def insert_feedback_ids(self, connection: Connection, ids: Sequence[tuple[str, str]]) -> None:
        """(event id, decision id) pairs; a taken event id raises IntegrityError."""
        now = time.time()
        rows = [{"event_id": event_id, "decision_id": decision_id, "created_at": now} for event_id, decision_id in ids]
        connection.execute(insert(feedback), rows)

    def forget_before(self, cutoff: float) -> None:
        """Decisions and feedback ids older than the reward window are no longer needed."""
        with self.engine.begin() as connection:
            # A decision not yet forwarded stays, however old: MetricsService has not got it.
            connection.execute(
                delete(decisions).where(decisions.c.created_at < cutoff, decisions.c.forwarded.is_(True))
            )
            connection.execute(delete(feedback).where(feedback.c.created_at < cutoff))

    # -- outbox ----------------------------------------------------------------------------------

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
