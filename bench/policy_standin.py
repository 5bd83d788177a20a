"""``python -m bench.policy_standin``: the real PolicyService (settings, gRPC server, store,
bandit) with a scoring stand-in inside its own process that answers at once, for
bench/policy.py only. It isolates the policy's own cost: no scoring work and no network
round trip to scoring. It is NOT the service: never deploy it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rectune.domain.configuration import Configuration
from rectune.domain.events import ScoredItem
from services.common.entrypoint import run_service
from services.policy.__main__ import PolicyServerSettings, build


class InstantRanker:
    """A scoring stand-in for the benchmark only: the same fixed list for everyone, built once."""

    def __init__(self) -> None:
        self._lists: dict[int, list[ScoredItem]] = {}

    def fit_configuration(self, configuration: Configuration) -> str:
        return configuration.strategy

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Any], k: int, deadline: float
    ) -> list[ScoredItem]:
        if k not in self._lists:
            self._lists[k] = [
                ScoredItem(item_id=str(rank), score=1.0 / rank, probability=0.5, rank=rank) for rank in range(1, k + 1)
            ]
        return self._lists[k]


if __name__ == "__main__":
    sys.exit(
        run_service(
            "python -m bench.policy_standin", PolicyServerSettings, lambda settings: build(settings, InstantRanker())
        )
    )
