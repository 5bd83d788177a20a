"""The README's configuration reference names every setting the services and the tuner read."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from services.common.config import env_names

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize(
    ("module", "settings_class"),
    [
        ("services.embedding.__main__", "EmbeddingSettings"),
        ("services.scoring.__main__", "ScoringSettings"),
        ("services.policy.__main__", "PolicyServerSettings"),
        ("services.metrics.__main__", "MetricsSettings"),
        ("tuner.settings", "TunerSettings"),
    ],
)
def test_every_setting_is_documented(module: str, settings_class: str) -> None:
    settings = getattr(importlib.import_module(module), settings_class)
    missing = sorted(name for name in env_names(settings) if f"`{name}`" not in README)
    assert missing == []
