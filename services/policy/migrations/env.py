"""Alembic environment of PolicyService: see services.common.migrations."""

from services.common.migrations import run_environment

run_environment()
