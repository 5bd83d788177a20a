"""Every service's Alembic migrations produce exactly the tables its code declares, on SQLite
and on PostgreSQL, and running them again changes nothing."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.common.migrations import Schema, migrate
from services.common.storage import make_engine
from services.metrics.core.database import SCHEMA as METRICS
from services.policy.core.store import SCHEMA as POLICY
from services.scoring.core.tables import SCHEMA as SCORING


@pytest.mark.parametrize("schema", [METRICS, POLICY, SCORING], ids=["metrics", "policy", "scoring"])
def test_migrations_produce_the_declared_schema(schema: Schema, database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, schema)
    migrate(engine, schema)  # idempotent
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": schema.version_table})
        assert compare_metadata(context, schema.metadata) == []
    engine.dispose()


def test_services_sharing_one_database_keep_their_own_histories(database_url: str) -> None:
    engine = make_engine(database_url)
    for schema in (METRICS, POLICY, SCORING):
        migrate(engine, schema)
    for schema in (METRICS, POLICY, SCORING):
        migrate(engine, schema)  # each finds its own history, whatever the others made
        own = set(schema.metadata.tables)
        options = {
            "version_table": schema.version_table,
            "include_name": lambda name, kind, _parent, own=own: kind != "table" or name in own,
        }
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts=options)
            assert context.get_current_revision() is not None
            assert compare_metadata(context, schema.metadata) == []
    engine.dispose()
