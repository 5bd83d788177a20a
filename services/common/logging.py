"""structlog configuration. Called once, by entrypoints only; library code just logs."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer


def configure_logging(log_format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines to stdout in services (stderr for command-line tools, whose stdout is their
    answer); a readable console format on a terminal."""
    stream = stream or sys.stdout
    use_console = log_format == "console" or (log_format == "auto" and stream.isatty())
    # Tracebacks without frame locals: locals hold request contents, and logs hold ids only.
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False))
        if use_console
        else structlog.processors.JSONRenderer()
    )
    tracebacks = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            tracebacks if not use_console else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # gRPC and other libraries log through the standard library: keep their warnings.
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr)
