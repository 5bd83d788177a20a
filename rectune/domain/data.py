"""The shape of a recommender's data: what a person tuning it reads first."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DataShape:
    users: int
    items: int
    interactions: int
    median_history: float  # interactions per user with any
    max_history: int

    @staticmethod
    def of(history_lengths: Sequence[int], items: int) -> DataShape:
        """From each user's number of interactions and the catalogue's size."""
        lengths = [n for n in history_lengths if n > 0]
        if not lengths:
            return DataShape(0, items, 0, 0.0, 0)
        return DataShape(len(lengths), items, sum(lengths), float(statistics.median(lengths)), max(lengths))

    @property
    def density(self) -> float:
        """Share of the user x item matrix with an interaction."""
        cells = self.users * self.items
        return self.interactions / cells if cells else 0.0

    def summary(self) -> str:
        """One line, as the tuner's prompt shows it."""
        return (
            f"{self.users} users, {self.items} items, {self.interactions} interactions "
            f"(density {self.density:.3g}); interactions per user: median {self.median_history:g}, "
            f"max {self.max_history}"
        )
