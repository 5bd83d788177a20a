"""docs/configuration.md is generated from the settings classes (scripts/gen_config_docs.py):
the committed page must be what the code reads now, every setting of every program in it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from scripts.gen_config_docs import PAGE, SECTIONS, page
from services.common.config import env_names


def test_the_configuration_page_is_the_one_the_settings_classes_generate() -> None:
    assert PAGE.read_text() == page(), "docs/configuration.md is stale: run python scripts/gen_config_docs.py"


@pytest.mark.parametrize(("module", "settings_class"), [(module, name) for _, module, name, _ in SECTIONS])
def test_every_setting_is_on_the_page(module: str, settings_class: str) -> None:
    settings = getattr(importlib.import_module(module), settings_class)
    text = Path(PAGE).read_text()
    assert sorted(name for name in env_names(settings) if f"| `{name}` |" not in text) == []
