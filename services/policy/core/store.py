"""Durable PolicyService state in SQL (SQLite file or PostgreSQL): arms with their beliefs,
decisions inside the reward window, feedback ids, the outbox to MetricsService, settings.

Every call that changes state commits before the RPC is acknowledged. Counts live in the
database, so several replicas behind one PostgreSQL share them. Writes that belong
together go through ``unit_of_work``: one transaction, and a taken id surfaces as the
domain's ``Duplicate``, never as a driver's exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from rectune.domain.arms import decay
from rectune.domain.errors import Duplicate
from rectune.domain.events import Decision
from services.common.migrations import migrate
from services.policy.core.model import Arm, ArmCounts, BanditSettings, GuardrailSettings, algorithm_named
from services.policy.core.tables import (
    ADD_STEPS,
    ADD_TO_ARM,
    INSERT_DECISION,
    SCHEMA,
    arm_of,
    arm_row,
    arms,
    counters,
    dead_letters,
    decision_of,
    decision_row,
    decisions,
    feedback,
    outbox,
    promotions,
    settings_table,
)


@dataclass(frozen=True)
class DeadLetter:
    """An outbox row a receiver refused: its kind, its JSON payload, and the receiver's reason."""

    kind: str
    payload: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class StoredDeadLetter:
    id: int
    letter: DeadLetter
    created_at: float


@dataclass(frozen=True)
class Promotion:
    """One promotion: ``arm_id`` became champion in place of ``previous_arm_id``."""

    promotion_id: int
    arm_id: str
    previous_arm_id: str
    reason: str
    promoted_at: float


def _bury(connection: Connection, dead: Sequence[DeadLetter]) -> None:
    if dead:
        now = time.time()
        rows = [{"kind": d.kind, "payload": json.dumps(d.payload), "reason": d.reason, "created_at": now} for d in dead]
        connection.execute(insert(dead_letters), rows)


class StoreWork:
    """The reads and writes of one transaction (see ``PolicyStore.unit_of_work``)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def arms(self) -> list[Arm]:
        rows = self.connection.execute(select(arms).order_by(arms.c.created_at, arms.c.arm_id))
        return [arm_of(row) for row in rows]

    def arm(self, arm_id: str) -> Arm | None:
        row = self.connection.execute(select(arms).where(arms.c.arm_id == arm_id)).first()
        return None if row is None else arm_of(row)

    def save_arms(self, changed: Sequence[Arm]) -> None:
        for arm in changed:
            self.connection.execute(update(arms).where(arms.c.arm_id == arm.arm_id).values(**arm_row(arm)))

    def add_steps(self, count: int) -> int:
        """Count decisions; returns the last new step (one statement once the row exists)."""
        bumped = self.connection.execute(ADD_STEPS, {"added": count}).scalar()
        if bumped is None:
            self.connection.execute(insert(counters).values(name="step", value=count))
            return count
        return int(bumped)

    def current_step(self) -> int:
        value = self.connection.execute(select(counters.c.value).where(counters.c.name == "step")).scalar()
        return int(value or 0)

    def insert_decisions(self, logged: Sequence[Decision]) -> None:
        """The whole group in one executemany (a taken request id is a Duplicate)."""
        self.connection.execute(INSERT_DECISION, [decision_row(decision) for decision in logged])

    def add_to_arm(self, arm_id: str, step: int, added: ArmCounts, discount: float | None) -> None:
        """Add to an arm's counts as of ``step``. Without a discount that is one statement with
        the arithmetic in SQL (safe across replicas); with one, the stored beliefs decay by
        ``discount`` per step since the arm's last change, under a row lock."""
        if discount is None:
            values = dataclasses.asdict(added)
            self.connection.execute(
                ADD_TO_ARM, {"target": arm_id, "new_step": step, **{f"add_{k}": v for k, v in values.items()}}
            )
            return
        row = self.connection.execute(select(arms).where(arms.c.arm_id == arm_id).with_for_update()).first()
        if row is None:
            return
        kept = decay(discount, step - row.step)
        self.connection.execute(
            update(arms)
            .where(arms.c.arm_id == arm_id)
            .values(
                impressions=row.impressions * kept + added.impressions,
                reward=row.reward * kept + added.reward,
                clicks=row.clicks + added.clicks,
                conversions=row.conversions + added.conversions,
                step=step,
            )
        )

    def decisions_by_id(self, decision_ids: Collection[str]) -> dict[str, Decision]:
        rows = self.connection.execute(select(decisions).where(decisions.c.decision_id.in_(list(decision_ids))))
        return {row.decision_id: decision_of(row) for row in rows}

    def recorded_feedback_ids(self, event_ids: Collection[str]) -> set[str]:
        """Those of ``event_ids`` recorded before."""
        rows = self.connection.execute(select(feedback.c.event_id).where(feedback.c.event_id.in_(list(event_ids))))
        return {row.event_id for row in rows}

    def insert_feedback_ids(self, ids: Sequence[tuple[str, str]]) -> None:
        """(event id, decision id) pairs; a taken event id is a Duplicate."""
        now = time.time()
        rows = [{"event_id": event_id, "decision_id": decision_id, "created_at": now} for event_id, decision_id in ids]
        self.connection.execute(insert(feedback), rows)

    def enqueue_many(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self.connection.execute(
            insert(outbox),
            [
                {"kind": kind, "payload": json.dumps(payload), "attempts": 0, "created_at": time.time()}
                for kind, payload in rows
            ],
        )

    def record_promotion(self, arm_id: str, previous_arm_id: str, reason: str) -> None:
        self.connection.execute(
            insert(promotions).values(
                arm_id=arm_id, previous_arm_id=previous_arm_id, reason=reason, promoted_at=time.time()
            )
        )

    def last_promotion(self) -> Promotion | None:
        """The newest promotion not rolled back yet."""
        row = self.connection.execute(
            select(promotions).where(promotions.c.rolled_back.is_(False)).order_by(promotions.c.id.desc()).limit(1)
        ).first()
        return None if row is None else Promotion(row.id, row.arm_id, row.previous_arm_id, row.reason, row.promoted_at)

    def mark_rolled_back(self, promotion_id: int) -> None:
        self.connection.execute(update(promotions).where(promotions.c.id == promotion_id).values(rolled_back=True))


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        migrate(engine, SCHEMA)
        # SQLite takes one writer at a time, and a writer that finds the file locked backs
        # off by sleeping; queueing writers on a lock in this process instead keeps tail
        # latency low. PostgreSQL has row locks and needs none.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @contextlib.contextmanager
    def unit_of_work(self) -> Iterator[StoreWork]:
        """One write transaction (serialised in this process on SQLite): committed when the
        block ends, rolled back when it raises; a unique value taken raises ``Duplicate``."""
        try:
            with self._write_lock, self.engine.begin() as connection:
                yield StoreWork(connection)
        except IntegrityError as exc:
            raise Duplicate(str(exc.orig)) from None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[StoreWork]:
        with self.engine.connect() as connection:
            yield StoreWork(connection)

    # -- reads outside a transaction -------------------------------------------------------

    def arms(self) -> list[Arm]:
        with self._reading() as work:
            return work.arms()

    def arms_and_step(self) -> tuple[list[Arm], int]:
        """Every arm and the decision count, read on one connection."""
        with self._reading() as work:
            return work.arms(), work.current_step()

    def current_step(self) -> int:
        with self._reading() as work:
            return work.current_step()

    def decision_by_request(self, request_id: str) -> Decision | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(decisions).where(decisions.c.request_id == request_id)).first()
        return None if row is None else decision_of(row)

    def unforwarded_decisions(self, limit: int) -> list[Decision]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(decisions).where(decisions.c.forwarded.is_(False)).order_by(decisions.c.created_at).limit(limit)
            )
            return [decision_of(row) for row in rows]

    # -- single writes -------------------------------------------------------------------------

    def insert_arm(self, arm: Arm) -> None:
        """Raises Duplicate when the id or the configuration is taken (the caller says which)."""
        with self.unit_of_work() as work:
            work.connection.execute(insert(arms).values(**arm_row(arm)))

    def mark_forwarded(self, decision_ids: Sequence[str], dead: Sequence[DeadLetter] = ()) -> None:
        """The decisions reached MetricsService, except those refused, kept as dead letters."""
        with self.engine.begin() as connection:
            connection.execute(
                update(decisions).where(decisions.c.decision_id.in_(list(decision_ids))).values(forwarded=True)
            )
            _bury(connection, dead)

    def forget_before(self, cutoff: float) -> None:
        """Decisions and feedback ids older than the reward window are no longer needed."""
        with self.engine.begin() as connection:
            # A decision not yet forwarded stays, however old: MetricsService has not got it.
            connection.execute(
                delete(decisions).where(decisions.c.created_at < cutoff, decisions.c.forwarded.is_(True))
            )
            connection.execute(delete(feedback).where(feedback.c.created_at < cutoff))

    # -- outbox ----------------------------------------------------------------------------------

    def settle(self, delivered: Sequence[int], dead: Sequence[DeadLetter]) -> None:
        """In one transaction: outbox rows that were delivered (or refused) leave the outbox, and
        the refused ones are kept as dead letters."""
        with self.engine.begin() as connection:
            if delivered:
                connection.execute(delete(outbox).where(outbox.c.id.in_(list(delivered))))
            _bury(connection, dead)

    def pending(self, limit: int, kinds: Sequence[str]) -> list[tuple[int, str, dict[str, Any]]]:
        """The oldest outbox rows of these kinds (the others wait for a drain that can send them)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(outbox).where(outbox.c.kind.in_(list(kinds))).order_by(outbox.c.id).limit(limit)
            )
            return [(row.id, row.kind, json.loads(row.payload)) for row in rows]

    def failed_attempt(self, ids: Sequence[int]) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(outbox).where(outbox.c.id.in_(list(ids))).values(attempts=outbox.c.attempts + 1))

    # -- dead letters ----------------------------------------------------------------------------

    def dead_letter_count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(dead_letters)).scalar() or 0)

    def backlog(self) -> int:
        """What waits to be forwarded: outbox rows and decisions not yet forwarded."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(outbox)).scalar() or 0
            waiting = decisions.c.forwarded.is_(False)
            unforwarded = connection.execute(select(func.count()).select_from(decisions).where(waiting)).scalar()
        return int(rows) + int(unforwarded or 0)

    def oldest_waiting_since(self) -> float | None:
        """When the oldest row still waiting to be forwarded was queued (None when none waits,
        or only rows queued before their time was recorded)."""
        with self.engine.connect() as connection:
            oldest_row = connection.execute(select(func.min(outbox.c.created_at))).scalar()
            waiting = decisions.c.forwarded.is_(False)
            oldest_decision = connection.execute(select(func.min(decisions.c.created_at)).where(waiting)).scalar()
        known = [float(t) for t in (oldest_row, oldest_decision) if t is not None]
        return min(known) if known else None

    def dead_letters(self, limit: int = 100) -> list[StoredDeadLetter]:
        """The oldest dead letters first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(dead_letters).order_by(dead_letters.c.id).limit(limit))
            return [
                StoredDeadLetter(row.id, DeadLetter(row.kind, json.loads(row.payload), row.reason), row.created_at)
                for row in rows
            ]

    def replay_dead_letters(self, ids: Sequence[int] = ()) -> int:
        """Move dead letters (all, or those named) back to the outbox, to be sent again (after
        whatever refused them was fixed). Returns how many."""
        with self.unit_of_work() as work:
            chosen = select(dead_letters).order_by(dead_letters.c.id)
            if ids:
                chosen = chosen.where(dead_letters.c.id.in_(list(ids)))
            rows = work.connection.execute(chosen).all()
            if rows:
                work.connection.execute(
                    insert(outbox), [{"kind": row.kind, "payload": row.payload, "attempts": 0} for row in rows]
                )
                work.connection.execute(delete(dead_letters).where(dead_letters.c.id.in_([row.id for row in rows])))
        return len(rows)

    # -- settings ------------------------------------------------------------------------------

    def settings(self) -> BanditSettings:
        with self.engine.connect() as connection:
            payload = connection.execute(select(settings_table.c.payload).where(settings_table.c.id == 1)).scalar()
        if payload is None:
            return BanditSettings()
        values = json.loads(payload)
        values["guardrail"] = GuardrailSettings(**values["guardrail"])
        values["algorithm"] = algorithm_named(values["algorithm"])
        return BanditSettings(**values)

    def save_settings(self, settings: BanditSettings) -> None:
        values = dataclasses.asdict(settings)
        values["algorithm"] = settings.algorithm.value
        payload = json.dumps(values, sort_keys=True)
        with self.engine.begin() as connection:
            if connection.execute(select(settings_table.c.id).where(settings_table.c.id == 1)).first():
                connection.execute(update(settings_table).where(settings_table.c.id == 1).values(payload=payload))
            else:
                connection.execute(insert(settings_table).values(id=1, payload=payload))
