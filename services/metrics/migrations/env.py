"""Alembic environment of MetricsService: see services.common.migrations."""

from services.common.migrations import run_environment

run_environment()
