"""The audit table: every proposal the tuner screened and every arm change it planned or
made, with the reason (the proposer's rationale and the numbers behind the decision).
SQLite file or PostgreSQL, schema by Alembic like the services' tables."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from rectune.domain.configuration import Configuration
from rectune.domain.errors import Unavailable
from rectune.domain.fidelity import Fidelity
from services.common.migrations import Schema, migrate
from services.common.storage import make_engine
from tuner.controller import Action, Plan
from tuner.errors import TunerError
from tuner.fidelity import Staged
from tuner.proposers import Observation
from tuner.screen import Screen

metadata = sa.MetaData()
audit_table = sa.Table(
    "tuner_audit",
    metadata,
    sa.Column("entry_id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("cycle_id", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.Float(), nullable=False, index=True),
    sa.Column("dry_run", sa.Boolean(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("arm_id", sa.String(128), nullable=False),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("configuration", sa.Text(), nullable=False),
    sa.Column("configuration_hash", sa.String(64), nullable=False),
    sa.Column("ndcg", sa.Float(), nullable=True),
    sa.Column("outcome", sa.Text(), nullable=False),
    sa.Column("rationale", sa.Text(), nullable=False),
    # The proposal source (tuner.sources), the share of its training budget that ndcg was
    # measured at (below 1: pruned by the multi-fidelity screen), and every stage as JSON.
    sa.Column("source", sa.String(32), nullable=False, server_default=""),
    sa.Column("budget", sa.Float(), nullable=False, server_default="1.0"),
    sa.Column("stages", sa.Text(), nullable=False, server_default="[]"),
)
SCHEMA = Schema(Path(__file__).resolve().parent / "migrations", metadata, "tuner_alembic_version")


class AuditError(TunerError):
    """The audit database cannot be opened or written; the message names it (no password)."""


@dataclass(frozen=True)
class AuditEntry:
    cycle_id: str
    recorded_at: float
    dry_run: bool
    kind: str  # register, retire, promote, rejected
    arm_id: str
    origin: str
    configuration: str  # JSON, empty for retire/promote
    configuration_hash: str
    ndcg: float | None
    outcome: str  # planned (dry run), applied, failed: ..., rejected
    rationale: str
    source: str = ""
    budget: float = 1.0
    stages: str = "[]"  # JSON: [{training_budget, user_fraction, ndcg, seconds}, ...]


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        migrate(engine, SCHEMA)
        # Screened configurations read so far, and the last entry read: a tuner that runs
        # for months asks every cycle, and rows are never changed, so each call reads only
        # the rows written since the one before.
        self._observations: list[Observation] = []
        self._observed_through = 0

    @classmethod
    def open(cls, url: str) -> AuditLog:
        try:
            return cls(make_engine(url))
        except (SQLAlchemyError, Unavailable) as exc:
            shown = make_url(url).render_as_string(hide_password=True)
            # The driver's own error, when there is one (storage faults come as Unavailable).
            cause = exc.__cause__ if isinstance(exc, Unavailable) else getattr(exc, "orig", None)
            name = type(cause if isinstance(exc, Unavailable) and cause else exc).__name__
            raise AuditError(f"audit database {shown}: {name}: {cause or exc}") from None

    def record(self, plan: Plan, dry_run: bool, outcomes: Sequence[tuple[Action, str]] = ()) -> list[AuditEntry]:
        """One row per action and per rejected proposal of the plan."""
        outcome_of = {id(action): outcome for action, outcome in outcomes}
        now = time.time()
        entries = [self._action_entry(plan, a, dry_run, now, outcome_of.get(id(a), "planned")) for a in plan.actions]
        for rejected in plan.rejected:
            screen = plan.screens.get(rejected.proposal.configuration.key())
            entries.append(
                AuditEntry(
                    plan.cycle_id,
                    now,
                    dry_run,
                    "rejected",
                    "",
                    rejected.proposal.origin.value,
                    json.dumps(rejected.proposal.configuration.as_dict()),
                    rejected.configuration_hash,
                    screen.ndcg if screen else None,
                    "rejected",
                    f"{rejected.proposal.rationale}; {rejected.reason}",
                    rejected.proposal.source,
                    screen.fidelity.training_budget if screen else 1.0,
                    _stages_json(plan.stages.get(rejected.proposal.configuration.key())),
                )
            )
        if entries:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(audit_table), [entry.__dict__ for entry in entries])
        return entries

    @staticmethod
    def _action_entry(plan: Plan, action: Action, dry_run: bool, now: float, outcome: str) -> AuditEntry:
        configuration, configuration_hash, ndcg, stages = "", "", None, "[]"
        if action.configuration is not None:
            configuration = json.dumps(action.configuration.as_dict())
            screen = plan.screens.get(action.configuration.key())
            if screen is not None:
                configuration_hash, ndcg = screen.configuration_hash, screen.ndcg
            stages = _stages_json(plan.stages.get(action.configuration.key()))
        return AuditEntry(
            plan.cycle_id,
            now,
            dry_run,
            action.kind,
            action.arm_id,
            action.origin.value if action.origin else "",
            configuration,
            configuration_hash,
            ndcg,
            outcome,
            action.reason,
            action.source,
            1.0,
            stages,
        )

    def recent(self, limit: int = 20) -> list[AuditEntry]:
        query = sa.select(audit_table).order_by(audit_table.c.entry_id.desc()).limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [AuditEntry(**{k: v for k, v in row.items() if k != "entry_id"}) for row in rows]

    def staged(self) -> list[Staged]:
        """Every multi-fidelity screen recorded, oldest first (dry runs included)."""
        query = (
            sa.select(audit_table.c.configuration, audit_table.c.configuration_hash, audit_table.c.stages)
            .where(audit_table.c.stages != "[]", audit_table.c.configuration != "")
            .order_by(audit_table.c.entry_id)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_staged_from(*row) for row in rows]

    def observations(self) -> list[Observation]:
        """Every configuration screened so far with its offline NDCG (dry runs included: the
        screen was real), oldest first."""
        query = (
            sa.select(
                audit_table.c.entry_id,
                audit_table.c.configuration,
                audit_table.c.ndcg,
                audit_table.c.budget,
                audit_table.c.source,
            )
            .where(
                audit_table.c.entry_id > self._observed_through,
                audit_table.c.ndcg.is_not(None),
                audit_table.c.configuration != "",
            )
            .order_by(audit_table.c.entry_id)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        for entry_id, configuration_json, ndcg, budget, source in rows:
            configuration = json.loads(configuration_json)
            self._observations.append(
                Observation(Configuration(configuration["strategy"], configuration["params"]), ndcg, budget, source)
            )
            self._observed_through = entry_id
        return list(self._observations)


def _stages_json(staged: Staged | None) -> str:
    if staged is None:
        return "[]"
    return json.dumps(
        [
            {
                "training_budget": stage.fidelity.training_budget,
                "user_fraction": stage.fidelity.user_fraction,
                "ndcg": stage.ndcg,
                "seconds": round(stage.seconds, 3),
            }
            for stage in staged.stages
        ]
    )


def _staged_from(configuration_json: str, configuration_hash: str, stages_json: str) -> Staged:
    configuration = json.loads(configuration_json)
    stages = tuple(
        Screen(
            configuration_hash,
            stage["ndcg"],
            0.0,
            fidelity=Fidelity(stage["training_budget"], stage["user_fraction"]),
            seconds=stage["seconds"],
        )
        for stage in json.loads(stages_json)
    )
    return Staged(Configuration(configuration["strategy"], configuration["params"]), stages)
