"""The tuner's proposers (random, TPE, the language model) against each other, on the
offline screen the tuner uses.

Each proposer gets the same budget of configurations, one at a time, each screened by a real
ScoringService (its own process, MovieLens 100K, NDCG@10 on the time-based holdout) through
the tuner's own gRPC backend; a learning proposer sees every earlier screen, as in the
tuner's cycles. Baseline in the same run: the strategies' default configurations. Prints
JSON: the best NDCG each proposer found within the budget (per seed and the mean), the mean
NDCG of its proposals, and the ratios to random search and to the best default.

    .venv/bin/python -m bench.tuner [--budget 30] [--seeds 5] [--lm-cache-dir DIR]

The language model is the packaged SmolLM2-135M-Instruct without its rationale (it does
not change the choice), sampling at temperature 1.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from bench.common import DATA, print_json, start_child_service
from rectune.domain.configuration import Configuration
from rectune.domain.space import SearchSpace
from services.common.clients import ClientOptions
from services.common.wait_healthy import wait_serving
from tuner.clients import GrpcBackend
from tuner.language_model import LanguageModel
from tuner.lm_proposer import LanguageModelProposer
from tuner.proposers import Observation, Proposer, RandomProposer, TpeProposer
from tuner.space import narrowed

# Strategies that need no EmbeddingService, in ranges that keep one screen to seconds here.
RESTRICTION = {
    "strategies": {
        "item_knn": {},
        "als": {"factors": {"low": 8, "high": 128}, "iterations": {"low": 2, "high": 30}},
    }
}


def search(backend: GrpcBackend, space: SearchSpace, proposer: Proposer, budget: int) -> list[float]:
    """NDCG of each configuration the proposer chose, in order."""
    history: list[Observation] = []
    taken: set[str] = set()
    for _ in range(budget):
        proposals = proposer.propose(space, 1, taken, history)
        if not proposals:
            break  # the proposer has nothing new left to offer in this space
        configuration = proposals[0].configuration
        history.append(Observation(configuration, backend.evaluate(configuration, 10).ndcg))
        taken.add(configuration.key())
    return [observation.value for observation in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=30, help="configurations screened per proposer and seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lm-cache-dir", default=str(Path(tempfile.gettempdir()) / "rectune-lm"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    model = LanguageModel("", args.lm_cache_dir)
    proposers: dict[str, Callable[[int], Proposer]] = {
        "random": RandomProposer,
        "tpe": TpeProposer,
        "lm": lambda seed: LanguageModelProposer(model, seed, rationale_tokens=0),
    }

    process, address = start_child_service("scoring", "--dataset", str(DATA), "--embedding-address", "127.0.0.1:9")
    try:
        assert wait_serving([address], 300)[address] == "SERVING"
        # Only ScoringService is called: the policy and metrics channels stay unused.
        backend = GrpcBackend(address, address, address, ClientOptions(deadline_seconds=600))
        space = narrowed(backend.search_space(), RESTRICTION)
        started = time.perf_counter()
        defaults = {name: backend.evaluate(Configuration(name, {}), 10).ndcg for name in space.names()}
        runs: dict[str, list[list[float]]] = {}
        seconds_per_proposer: dict[str, float] = {}
        for name, make in proposers.items():
            started_proposer = time.perf_counter()
            runs[name] = [search(backend, space, make(seed), args.budget) for seed in range(1, args.seeds + 1)]
            seconds_per_proposer[name] = round(time.perf_counter() - started_proposer, 1)
        seconds = time.perf_counter() - started
        backend.close()
    finally:
        process.terminate()
        process.wait()

    best_default = max(defaults.values())
    summary: dict[str, dict[str, Any]] = {}
    for name, seeds in runs.items():
        best_per_seed = [max(ndcgs) for ndcgs in seeds]
        summary[name] = {
            "best_ndcg_per_seed": [round(b, 4) for b in best_per_seed],
            "best_ndcg_mean": round(statistics.mean(best_per_seed), 4),
            "mean_ndcg_of_proposals": round(statistics.mean(v for ndcgs in seeds for v in ndcgs), 4),
            "proposals_per_seed": [len(ndcgs) for ndcgs in seeds],  # fewer than the budget: space used up
            "best_so_far_seed1": [round(max(seeds[0][: n + 1]), 4) for n in range(len(seeds[0]))],
            "seconds": seconds_per_proposer[name],
        }
    best = {name: float(summary[name]["best_ndcg_mean"]) for name in summary}
    mean = {name: float(summary[name]["mean_ndcg_of_proposals"]) for name in summary}
    print_json(
        {
            "benchmark": "tuner",
            "strategies": space.names(),
            "budget": args.budget,
            "seeds": args.seeds,
            "default_ndcg": {name: round(value, 4) for name, value in defaults.items()},
            "proposers": summary,
            "ratio_to_random_best": {name: round(best[name] / best["random"], 3) for name in ("tpe", "lm")},
            # What going live costs: every proposal that passes the screen takes traffic.
            "ratio_to_random_mean_proposal": {name: round(mean[name] / mean["random"], 3) for name in ("tpe", "lm")},
            "ratio_best_to_best_default": {name: round(best[name] / best_default, 3) for name in best},
            "seconds": round(seconds, 1),
        }
    )


if __name__ == "__main__":
    main()
