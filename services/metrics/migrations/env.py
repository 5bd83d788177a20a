"""Alembic environment: runs on the connection handed over by services.metrics.core.database.migrate."""

from __future__ import annotations

from alembic import context

from services.metrics.core.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through services.metrics.core.database.migrate(engine)")
context.configure(connection=connection, target_metadata=metadata, version_table="metrics_alembic_version")
with context.begin_transaction():
    context.run_migrations()
