"""A configuration: a strategy name and values for its hyperparameters.

Its key is canonical JSON (sorted names) and its hash the first 16 hex digits of the key's
SHA-256. ScoringService hashes the canonical form (every hyperparameter, defaults filled
in, see ``StrategySpace.canonical``): that hash is the lasting identity of an arm's
configuration and of a fitted model.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ParamValue = float | int | str | bool


@dataclass(frozen=True)
class Configuration:
    strategy: str
    params: Mapping[str, ParamValue]

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "params": dict(sorted(self.params.items()))}

    def key(self) -> str:
        """Canonical JSON: equal configurations give equal keys."""
        return json.dumps(self.as_dict(), sort_keys=True)

    @functools.cached_property
    def hash(self) -> str:
        """Stable id of the configuration (of its canonical form, where it is canonical)."""
        return hashlib.sha256(self.key().encode()).hexdigest()[:16]
