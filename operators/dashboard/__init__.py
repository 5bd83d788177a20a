"""The web dashboard: one page over PolicyService, MetricsService, ScoringService and the
tuner's audit table (see ``app.py``); ``rectune dashboard`` serves it."""

from __future__ import annotations

from operators.dashboard.app import create_app, serve

__all__ = ["create_app", "serve"]
