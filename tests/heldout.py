"""Offline evaluation written again from its definition, in plain Python, for tests to compare
ScoringService's numbers with: per user, the last ``holdout`` share of their interactions by
time is held out (at least one when they have two or more; ties keep the input order); a
ranked list never holds the user's training items; relevance is binary; NDCG@k over the
held-out items the user did not also have in training. Nothing here imports rectune.

MOVIELENS is the shipped MovieLens 100K folder."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MOVIELENS = Path(__file__).resolve().parent.parent / "data" / "movielens-100k"

Row = tuple[str, str, float]  # user id, item id, time


@dataclass(frozen=True)
class UserSplit:
    train: list[Row]
    held_out: dict[str, set[str]]  # user -> held-out items not also in their training rows
    seen: dict[str, set[str]]  # user -> their training items


def split_by_time(rows: Sequence[Row], holdout: float) -> UserSplit:
    by_user: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for order, (user, item, at) in enumerate(rows):
        by_user[user].append((at, order, item))
    train: list[Row] = []
    held_out: dict[str, set[str]] = {}
    seen: dict[str, set[str]] = {}
    for user, events in by_user.items():
        events.sort()
        n_test = max(1, math.floor(len(events) * holdout)) if len(events) >= 2 else 0
        kept = events[: len(events) - n_test]
        train += [(user, item, at) for at, _, item in kept]
        seen[user] = {item for _, _, item in kept}
        relevant = {item for _, _, item in events[len(events) - n_test :]} - seen[user]
        if relevant:
            held_out[user] = relevant
    return UserSplit(train, held_out, seen)


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    gains = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return gains / ideal


@dataclass(frozen=True)
class Reference:
    ndcg: float
    recall: float
    hit_rate: float
    coverage: float
    users: int


def reference_metrics(
    split: UserSplit, catalogue: Sequence[str], ranked_for: Callable[[str], list[str]], k: int
) -> Reference:
    """Mean NDCG@k, Recall@k and hit rate over the users with held-out items, and the share of
    the catalogue recommended to anyone; ``ranked_for(user)`` is the user's whole ranking."""
    ndcgs, recalls, hits, covered = [], [], [], set()
    for user in sorted(split.held_out):
        ranked = [item for item in ranked_for(user) if item not in split.seen[user]][:k]
        relevant = split.held_out[user]
        covered.update(ranked)
        found = len(set(ranked) & relevant)
        ndcgs.append(ndcg_at(ranked, relevant, k))
        recalls.append(found / len(relevant))
        hits.append(1.0 if found else 0.0)
    n = len(ndcgs)
    return Reference(sum(ndcgs) / n, sum(recalls) / n, sum(hits) / n, len(covered) / len(catalogue), n)


def popularity_ranking(train: Sequence[Row], catalogue: Sequence[str], half_life_seconds: float) -> list[str]:
    """Items by their training interactions, each weighted 2^-(age / half-life) as of the
    newest; ties by catalogue order."""
    newest = max(at for _, _, at in train)
    weight = dict.fromkeys(catalogue, 0.0)
    for _, item, at in train:
        weight[item] += 2.0 ** ((at - newest) / half_life_seconds)
    position = {item: n for n, item in enumerate(catalogue)}
    return sorted(catalogue, key=lambda item: (-weight[item], position[item]))


def movielens_popularity_reference(folder: Path = MOVIELENS, holdout: float = 0.2, k: int = 10) -> Reference:
    """Popularity (30-day half-life, ScoringService's default) on a MovieLens atomic folder's
    time split, from the files themselves."""
    rows = [line.split("\t") for line in (folder / "ml-100k.inter").read_text().splitlines()[1:]]
    catalogue = [line.split("\t")[0] for line in (folder / "ml-100k.item").read_text().splitlines()[1:]]
    split = split_by_time([(user, item, float(at)) for user, item, _rating, at in rows], holdout)
    ranking = popularity_ranking(split.train, catalogue, 30 * 86400.0)
    return reference_metrics(split, catalogue, lambda user: ranking, k)
