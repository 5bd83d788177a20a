"""Logs hold ids, never request contents: a logged traceback carries no frame locals."""

from __future__ import annotations

import io
import json

import structlog

from services.common.logging import configure_logging


def test_a_logged_traceback_has_no_frame_locals() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    try:

        def handle(request_text: str) -> None:
            parsed = request_text.upper()  # a local holding request contents
            raise RuntimeError(f"failed after {len(parsed)} characters")

        try:
            handle("the user's private words")
        except RuntimeError as exc:
            structlog.get_logger("test").error("unexpected_error", error_id="abc", exc_info=exc)
        line = json.loads(stream.getvalue().strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
    assert line["error_id"] == "abc" and "failed after 24 characters" in json.dumps(line["exception"])
    assert "private words" not in stream.getvalue().lower()
