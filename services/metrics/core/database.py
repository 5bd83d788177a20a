"""MetricsService schema migrations (the engine comes from services.common.storage)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from services.common.migrations import Schema
from services.common.migrations import migrate as migrate_schema
from services.metrics.core.tables import metadata

SCHEMA = Schema(Path(__file__).resolve().parent.parent / "migrations", metadata, "metrics_alembic_version")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    migrate_schema(engine, SCHEMA)
