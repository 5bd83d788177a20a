"""ScoringService's tables (its own metadata, apart from every other service's) and their
migrations (services/scoring/migrations)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, Text

from services.common.migrations import Schema

metadata = MetaData()

# Encoder output by model and item, reused while the item's text hash is unchanged.
item_vectors = Table(
    "item_vectors",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("item_id", String(128), primary_key=True),
    Column("text_sha", String(64), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
)

# Items and interactions that came by RPC, in arrival order (see journal.py).
journal_items = Table(
    "scoring_journal_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", String(128), nullable=False),
    Column("text", Text, nullable=False),
    Column("attributes", Text, nullable=False),
)
journal_interactions = Table(
    "scoring_journal_interactions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(128), nullable=False),
    Column("item_id", String(128), nullable=False),
    Column("value", Float, nullable=False),
    Column("time", Float, nullable=False),
)

# Fitted models, pickled, by configuration hash and the data watermark they were fitted on
# (see model_store.py): a restarted or new replica loads instead of fitting.
fitted_models = Table(
    "scoring_fitted_models",
    metadata,
    Column("configuration_hash", String(64), primary_key=True),
    Column("watermark", Integer, primary_key=True),
    Column("strategy", String(64), nullable=False),
    Column("fitted_at", Float, nullable=False),
    Column("n_items", Integer, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)

# Who is fitting which configuration, until when: replicas sharing the database do not fit
# the same configuration at the same time (one fits, the others load its result).
fit_leases = Table(
    "scoring_fit_leases",
    metadata,
    Column("configuration_hash", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)

SCHEMA = Schema(
    Path(__file__).resolve().parent.parent / "migrations",
    metadata,
    "scoring_alembic_version",
    legacy_table="item_vectors",  # made with create_all before migrations: the schema of 0001
    legacy_revision="0001",
)
