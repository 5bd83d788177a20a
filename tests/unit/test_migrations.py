"""Every service's Alembic migrations produce exactly the tables its code declares, on SQLite
and on PostgreSQL, and running them again changes nothing."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.common.config import SettingsError
from services.common.migrations import Schema, migrate
from services.common.settings import check_database_url
from services.common.storage import make_engine
from services.metrics.core.database import SCHEMA as METRICS
from services.policy.core.tables import SCHEMA as POLICY
from services.scoring.core.tables import SCHEMA as SCORING
from tuner.audit import SCHEMA as TUNER


@pytest.mark.parametrize("schema", [METRICS, POLICY, SCORING, TUNER], ids=["metrics", "policy", "scoring", "tuner"])
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
    for schema in (METRICS, POLICY, SCORING, TUNER):
        migrate(engine, schema)
    for schema in (METRICS, POLICY, SCORING, TUNER):
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


def test_an_in_memory_sqlite_database_is_refused_with_the_reason() -> None:
    with pytest.raises(SettingsError, match="an in-memory SQLite database is not shared by threads; give a file"):
        check_database_url("sqlite:///:memory:")
    with pytest.raises(ValueError, match="an in-memory SQLite database is not shared by threads"):
        make_engine("sqlite://")
    check_database_url("sqlite:///relative.db")
    check_database_url("postgresql+psycopg://user@host/db")
