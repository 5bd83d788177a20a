"""The tuner's proposers against each other, measured as a careful user would.

Protocol (docs/tuner.md, "Measuring tuning"): MovieLens 100K; per user, the last 20% of
interactions by time are the test split, the last 20% of the rest the validation split.
Every proposer starts from the same evaluated defaults (each strategy untuned) and proposes
``--budget`` configurations one at a time, each scored on validation only (NDCG@10), seeing
every earlier score. Then tuner.selection chooses one configuration from the defaults and
the proposals (re-checked on bootstrap resamples of the validation users; a default stays
unless beaten with 90% confidence), and that one is scored once on the test split, which
no search saw. Several seeds; paired bootstrap 95% intervals of each proposer's difference
to TPE. Also in the same run: the best untuned default chosen on validation, scored on
test, and the oracle (the best test score of the defaults and ``--oracle`` random
configurations scored directly on test: what no honest search can reach).

Fits and evaluations run in this process on ScoringService's own code (no gRPC: what is
measured is the search, not the transport) and are cached in ``--cache`` by split and
configuration hash, so a rerun is cheap.

    .venv/bin/python -m bench.tuner [--budget 40] [--seeds 10] [--proposers random,tpe,pool,lm]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from bench.common import print_json
from rectune.datasets import MOVIELENS_100K, load_movielens_atomic
from rectune.domain.configuration import Configuration
from rectune.domain.data import DataShape
from rectune.domain.space import SearchSpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.fitting import user_ndcgs
from services.scoring.core.ranking import Split, time_split
from services.scoring.core.strategies.base import Strategy
from services.scoring.core.strategies.registry import default_registry
from tuner.language_model import LanguageModel
from tuner.lm_proposer import LanguageModelProposer
from tuner.pool_proposer import PoolProposer
from tuner.proposers import Briefing, Observation, Proposer, RandomProposer, TpeProposer
from tuner.selection import choose
from tuner.space import narrowed

K = 10
PROPOSER_NAMES = ("random", "tpe", "pool", "pool-half", "lm")
# The strategies that need no EmbeddingService, in ranges that keep one fit to about a second.
RESTRICTION = {
    "strategies": {
        "popularity": {},
        "item_knn": {},
        "als": {"factors": {"low": 8, "high": 128}, "iterations": {"low": 2, "high": 30}},
        "hybrid": {"w_content": {"low": 0.0, "high": 0.0}},
    }
}


class Evaluator:
    """Per-user NDCG@K of a configuration on one split, cached on disk by configuration hash."""

    def __init__(self, name: str, split: Split, cache: Path, registry: Mapping[str, Strategy]) -> None:
        self.split = split
        self.registry = registry
        self.path = cache / f"{name}.json"
        self.cache: dict[str, list[float]] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.seconds = 0.0

    def canonical(self, configuration: Configuration) -> Configuration:
        space = self.registry[configuration.strategy].space
        return Configuration(configuration.strategy, space.canonical(configuration.params))

    def scores(self, configuration: Configuration) -> np.ndarray:
        canonical = self.canonical(configuration)
        if canonical.hash not in self.cache:
            started = time.perf_counter()
            model = self.registry[canonical.strategy].fit(self.split.train, canonical.params, None)
            self.cache[canonical.hash] = user_ndcgs(model, self.split.train, self.split.held_out, K).tolist()
            self.seconds += time.perf_counter() - started
        return np.array(self.cache[canonical.hash])

    def save(self) -> None:
        self.path.write_text(json.dumps(self.cache))


def data_shape(data: TrainingData) -> DataShape:
    return DataShape.of(np.bincount(data.users, minlength=data.n_users).tolist(), data.n_items)


def proposer_makers(names: Sequence[str], lm_cache_dir: str) -> dict[str, Callable[[int], Proposer]]:
    """Each named proposer by seed; the language model is loaded only when one needs it."""
    makers: dict[str, Callable[[int], Proposer]] = {"random": RandomProposer, "tpe": TpeProposer}
    if {"pool", "pool-half", "lm"} & set(names):
        model = LanguageModel("", lm_cache_dir)
        makers["pool"] = lambda seed: PoolProposer(model, seed)
        makers["pool-half"] = lambda seed: PoolProposer(model, seed, share=0.5)
        makers["lm"] = lambda seed: LanguageModelProposer(model, seed, rationale_tokens=0)
    return makers


def search(
    proposer: Proposer,
    space: SearchSpace,
    validation: Evaluator,
    defaults: list[Configuration],
    budget: int,
    shape: str,
) -> tuple[dict[str, np.ndarray], dict[str, Configuration], list[float], float]:
    """Validation scores of the defaults and of each proposal; also the proposals' mean
    scores in order and the seconds spent proposing."""
    scores = {c.key(): validation.scores(c) for c in defaults}
    by_key = {c.key(): c for c in defaults}
    history = [Observation(c, float(scores[c.key()].mean())) for c in defaults]
    taken = {validation.canonical(c).key() for c in defaults}
    proposal_means, proposing = [], 0.0
    for _ in range(budget):
        started = time.perf_counter()
        proposals = proposer.propose(space, 1, taken, history, Briefing(data=shape))
        proposing += time.perf_counter() - started
        if not proposals:
            break
        configuration = validation.canonical(proposals[0].configuration)
        taken.add(configuration.key())
        values = validation.scores(configuration)
        scores[configuration.key()], by_key[configuration.key()] = values, configuration
        history.append(Observation(configuration, float(values.mean())))
        proposal_means.append(float(values.mean()))
    return scores, by_key, proposal_means, proposing


def paired_interval(differences: Sequence[float], seed: int = 0, resamples: int = 10_000) -> list[float]:
    """The 95% bootstrap interval of the mean difference over seeds."""
    values = np.asarray(differences)
    picks = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[picks].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=40, help="configurations proposed per proposer and seed")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--proposers", default="random,tpe,pool,pool-half", help="of random, tpe, pool, pool-half, lm")
    parser.add_argument("--oracle", type=int, default=150, help="random configurations scored on test directly")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "rectune-bench-tuner"))
    parser.add_argument("--lm-cache-dir", default=str(Path(tempfile.gettempdir()) / "rectune-lm"))
    args = parser.parse_args()
    for name, value in (("--budget", args.budget), ("--seeds", args.seeds), ("--oracle", args.oracle)):
        if value < 1:
            parser.error(f"{name}: must be >= 1, got {value}")
    names = args.proposers.split(",")
    unknown = set(names) - set(PROPOSER_NAMES)
    if unknown or "tpe" not in names:
        parser.error(
            f"--proposers: of random, tpe, pool, pool-half, lm, with tpe (the baseline); got {args.proposers!r}"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    items, interactions = load_movielens_atomic(MOVIELENS_100K)
    data = ScoringData()
    data.upsert_items(items)
    data.add_interactions(interactions)
    test_split = time_split(data.snapshot(), 0.2)
    registry = default_registry()
    validation = Evaluator("validation", time_split(test_split.train, 0.2), cache, registry)
    test = Evaluator("test", test_split, cache, registry)
    space = narrowed(SearchSpace(tuple(registry[name].space for name in sorted(registry))), RESTRICTION)
    defaults = [Configuration(name, {}) for name in space.names()]
    shape = data_shape(validation.split.train).summary()

    makers = proposer_makers(names, args.lm_cache_dir)
    started = time.perf_counter()
    default_validation = {c.key(): float(validation.scores(c).mean()) for c in defaults}
    best_default = max(defaults, key=lambda c: default_validation[c.key()])
    results: dict[str, dict[str, list[Any]]] = {}
    for name in names:
        runs: dict[str, list[Any]] = {"test": [], "naive_test": [], "proposal_mean": [], "seconds": [], "kept": []}
        for seed in range(1, args.seeds + 1):
            scores, by_key, means, seconds = search(makers[name](seed), space, validation, defaults, args.budget, shape)
            choice = choose(scores, [c.key() for c in defaults], seed=seed)
            naive = max(scores, key=lambda key: float(scores[key].mean()))
            runs["test"].append(float(test.scores(by_key[choice.key]).mean()))
            runs["naive_test"].append(float(test.scores(by_key[naive]).mean()))
            runs["proposal_mean"].append(statistics.mean(means))
            runs["seconds"].append(seconds / max(len(means), 1))
            runs["kept"].append(choice.kept_default)
            validation.save()
            test.save()
        results[name] = runs

    rng = random.Random(0)
    oracle_pool = defaults + [space.sample(rng) for _ in range(args.oracle)]
    oracle = max(float(test.scores(c).mean()) for c in oracle_pool)
    test.save()
    default_test = float(test.scores(best_default).mean())
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "test_ndcg_mean": round(statistics.mean(runs["test"]), 4),
            "test_ndcg_per_seed": [round(v, 4) for v in runs["test"]],
            "test_ndcg_naive_choice_mean": round(statistics.mean(runs["naive_test"]), 4),
            "validation_ndcg_mean_of_proposals": round(statistics.mean(runs["proposal_mean"]), 4),
            "kept_the_default_in_seeds": sum(runs["kept"]),
            "seconds_per_proposal": round(statistics.mean(runs["seconds"]), 3),
            "difference_to_tpe_test": round(statistics.mean(runs["test"]) - statistics.mean(results["tpe"]["test"]), 4),
            "difference_to_tpe_test_95ci": paired_interval(
                [a - b for a, b in zip(runs["test"], results["tpe"]["test"], strict=True)]
            ),
            "ratio_to_oracle": round(statistics.mean(runs["test"]) / oracle, 3),
            "difference_to_tpe_validation_mean_of_proposals_95ci": paired_interval(
                [a - b for a, b in zip(runs["proposal_mean"], results["tpe"]["proposal_mean"], strict=True)]
            ),
        }
    print_json(
        {
            "benchmark": "tuner",
            "protocol": "search on validation, chosen configuration scored once on test (see the module docstring)",
            "dataset": shape,
            "strategies": space.names(),
            "budget": args.budget,
            "seeds": args.seeds,
            "default_validation_ndcg": {key: round(v, 4) for key, v in default_validation.items()},
            "best_default_on_validation": best_default.strategy,
            "best_default_test_ndcg": round(default_test, 4),
            "oracle_test_ndcg": round(oracle, 4),
            "proposers": summary,
            "evaluation_seconds": round(validation.seconds + test.seconds, 1),
            "seconds": round(time.perf_counter() - started, 1),
        }
    )


if __name__ == "__main__":
    main()
