"""Alembic environment of ScoringService: see services.common.migrations."""

from services.common.migrations import run_environment

run_environment()
