"""Ranking and scoring with a fitted model: the user's context (stored history plus what the
request adds), the list (never an item seen or excluded; from the approximate index for a
large catalogue's dot-product model unless exact), and calibrated probabilities."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from rectune.domain.errors import FailedPrecondition, InvalidArgument, quoted
from rectune.domain.events import Interaction, ScoredItem
from services.scoring.core.data import History, ScoringData
from services.scoring.core.fitted_models import FittedModels
from services.scoring.core.fitting import Fitted
from services.scoring.core.retrieval import approximate_top_k
from services.scoring.core.strategies.base import DotProductModel, ScoringContext


class Ranker:
    def __init__(self, data: ScoringData, models: FittedModels, max_k: int) -> None:
        self.data = data
        self.models = models
        self.max_k = max_k

    def context(self, fitted: Fitted, user_id: str, extra: Sequence[Interaction]) -> ScoringContext:
        """Who is scored: their stored history with the request's interactions after it."""
        known = self.data.history(user_id) if user_id else History.empty()
        if extra:
            self.data.check_interactions(extra, "history", user_required=False)
            items = np.array([self.data.item_index[i.item_id] for i in extra], dtype=np.int64)
            values = np.array([i.value for i in extra], dtype=np.float64)
            times = np.array([i.time for i in extra], dtype=np.float64)
            known = History(
                np.concatenate([known.items, items]),
                np.concatenate([known.values, values]),
                np.concatenate([known.times, times]),
            )
        if not user_id and len(known.items) == 0:
            raise InvalidArgument("user_id", "must be set, or history given for a cold user")
        return ScoringContext(known, fitted.user_rows.get(user_id) if user_id else None, time.time())

    def rank(
        self,
        fitted: Fitted,
        user_id: str,
        history: Sequence[Interaction],
        k: int,
        exclude_item_ids: Sequence[str],
        seed: int,
        exact: bool,
    ) -> list[ScoredItem]:
        """The k best items for the user; a seed of 0 draws one (hybrid's exploration)."""
        self.models.count_served(fitted.configuration.hash)
        n_items = fitted.model.n_items
        if not 1 <= k <= min(n_items, self.max_k):
            raise InvalidArgument("k", f"must be between 1 and {min(n_items, self.max_k)}, got {k}")
        context = self.context(fitted, user_id, history)
        excluded = [
            self.data.item_position(item_id, f"exclude_item_ids[{i}]") for i, item_id in enumerate(exclude_item_ids)
        ]
        # Items added since the fit are not in its scores (nor its index): nothing to exclude.
        excluded_all = np.concatenate([context.history.items, np.array(excluded, dtype=np.int64)])
        excluded_all = excluded_all[excluded_all < n_items]
        index = None if exact else self.models.index_of(fitted)
        found = None
        if index is not None:
            assert isinstance(fitted.model, DotProductModel)
            found = approximate_top_k(index, fitted.model, context, k, excluded_all)
        if found is None:
            scores = fitted.model.scores(context)
            chosen = fitted.model.select(scores, k, excluded_all, seed or int(np.random.default_rng().integers(2**31)))
            found = chosen, scores[chosen]
        chosen, chosen_scores = found
        probabilities = fitted.calibration.probability(chosen_scores)
        item_ids = self.data.item_ids(chosen.tolist())
        return [
            ScoredItem(item_id, float(score), float(p), rank)
            for rank, (item_id, score, p) in enumerate(
                zip(item_ids, chosen_scores.tolist(), probabilities.tolist(), strict=True), start=1
            )
        ]

    def score_items(
        self, fitted: Fitted, user_id: str, history: Sequence[Interaction], item_ids: Sequence[str]
    ) -> list[ScoredItem]:
        """The given items' scores and probabilities, in the order asked (rank 0: not ranked)."""
        positions = [self.data.item_position(item_id, f"item_ids[{i}]") for i, item_id in enumerate(item_ids)]
        for index, position in enumerate(positions):
            if position >= fitted.model.n_items:
                raise FailedPrecondition(
                    f"item_ids[{index}]: {quoted(item_ids[index])} was added after the last fit; refit"
                )
        scores = fitted.model.scores(self.context(fitted, user_id, history))[positions]
        probabilities = fitted.calibration.probability(scores)
        return [
            ScoredItem(item_id, float(s), float(p), 0)
            for item_id, s, p in zip(item_ids, scores.tolist(), probabilities.tolist(), strict=True)
        ]
