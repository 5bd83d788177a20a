"""The shape every ``python -m services.<name>`` shares: settings, logging, serve."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog

from services.common.config import SettingsError, load_settings
from services.common.logging import configure_logging
from services.common.server import RunningService
from services.common.settings import ServerSettings

SettingsT = TypeVar("SettingsT", bound=ServerSettings)


def run_service(
    prog: str,
    settings_class: type[SettingsT],
    build: Callable[[SettingsT], RunningService],
    argv: Sequence[str] | None = None,
) -> int:
    """Read settings (failing fast with a clear message), configure logging, serve until SIGTERM."""
    try:
        settings = load_settings(settings_class, argv, prog=prog)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        service = build(settings)
    except OSError as exc:
        structlog.get_logger(prog).error("start_failed", error=str(exc))
        return 1
    service.serve_until_signalled()
    return 0 if service.failure is None else 1
