"""Schema migrations (Alembic) for every service that stores state.

Each service keeps its own revisions (``services/<name>/migrations``) and its own version
table, so that services sharing one PostgreSQL database never step on each other's history.
Each service's ``env.py`` only calls ``run_environment``: the connection, the tables and the
version table come from ``migrate``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, MetaData, inspect, text


@dataclass(frozen=True)
class Schema:
    migrations: Path  # the service's Alembic folder (env.py, versions/)
    metadata: MetaData  # what the newest revision must produce (a test compares them)
    version_table: str
    # A database made before the service had migrations holds this table but no version
    # table: it is stamped with ``legacy_revision`` (the schema it has) and then upgraded.
    legacy_table: str = ""
    legacy_revision: str = ""


def migrate(engine: Engine, schema: Schema) -> None:
    """Bring the schema to the newest revision (idempotent; replicas starting together on
    PostgreSQL take turns)."""
    config = Config()
    config.set_main_option("script_location", str(schema.migrations))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            key = zlib.crc32(schema.version_table.encode())
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        config.attributes.update(connection=connection, metadata=schema.metadata, version_table=schema.version_table)
        if _made_before_migrations(connection, schema):
            command.stamp(config, schema.legacy_revision)
        command.upgrade(config, "head")


def _made_before_migrations(connection: Connection, schema: Schema) -> bool:
    if not schema.legacy_table:
        return False
    tables = set(inspect(connection).get_table_names())
    return schema.legacy_table in tables and schema.version_table not in tables


def run_environment() -> None:
    """The body of every service's Alembic ``env.py``."""
    from alembic import context

    attributes = context.config.attributes
    connection = attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through services.common.migrations.migrate(engine, schema)")
    context.configure(
        connection=connection, target_metadata=attributes["metadata"], version_table=attributes["version_table"]
    )
    with context.begin_transaction():
        context.run_migrations()
