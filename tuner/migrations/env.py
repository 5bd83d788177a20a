"""Alembic environment of the tuner's audit table: see services.common.migrations."""

from services.common.migrations import run_environment

run_environment()
