"""What a ScoringService replica does (``--role``): serving replicas never fit, so that fits,
refits and screens cannot raise ranking latency; training replicas fit, refit and evaluate,
and share their models through the model store; ``all`` does both (one replica, the demo)."""

from __future__ import annotations

import enum

from rectune.domain.errors import FailedPrecondition


class Role(enum.Enum):
    SERVE = "serve"
    TRAIN = "train"
    ALL = "all"

    @property
    def fits(self) -> bool:
        """Whether this replica trains models (a serving one loads them from the store)."""
        return self is not Role.SERVE


def refused_here(what: str) -> FailedPrecondition:
    """What a serving replica answers to work that fits a model."""
    return FailedPrecondition(f"{what}: this replica only serves (--role serve); send it to a training replica")
