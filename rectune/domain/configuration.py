"""A configuration: a strategy name and values for its hyperparameters.

Its key is canonical JSON (sorted names) and its hash the first 16 hex digits of the key's
SHA-256. ScoringService hashes the canonical form (every hyperparameter, defaults filled
in, see ``StrategySpace.canonical``): that hash is the lasting identity of an arm's
configuration and of a fitted model. A hyperparameter added to a space later is left out of
the hash while it is at its default (``hash_exempt``), so that an added hyperparameter does
not change the identity of configurations stored before it existed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ParamValue = float | int | str | bool


@dataclass(frozen=True)
class Configuration:
    strategy: str
    params: Mapping[str, ParamValue]
    hash_exempt: tuple[str, ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "params": dict(sorted(self.params.items()))}

    def key(self) -> str:
        """Canonical JSON: equal configurations give equal keys."""
        return json.dumps(self.as_dict(), sort_keys=True)

    @functools.cached_property
    def hash(self) -> str:
        """Stable id of the configuration (of its canonical form, where it is canonical)."""
        hashed = {name: value for name, value in self.params.items() if name not in self.hash_exempt}
        return hashlib.sha256(Configuration(self.strategy, hashed).key().encode()).hexdigest()[:16]
