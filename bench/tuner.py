"""The tuner's proposers against each other, on the offline screen the tuner uses.

Each proposer gets the same budget of configurations, one at a time, each screened by a real
ScoringService (its own process, MovieLens 100K, NDCG@10 on the time-based holdout) through
the tuner's own gRPC backend; a learning proposer sees every earlier screen, as in the
tuner's cycles. Baseline in the same run: the strategies' default configurations. Prints
JSON: the best NDCG each proposer found within the budget (per seed and the mean), the mean
NDCG of its proposals, and the ratios to random search and to the best default.

    .venv/bin/python -m bench.tuner [--budget 30] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.common import DATA, print_json, start_child_service
from services.common.clients import ClientOptions
from services.common.wait_healthy import wait_serving
from tuner.clients import GrpcBackend
from tuner.proposers import Observation, Proposer, RandomProposer, TpeProposer
from tuner.space import Configuration, SearchSpace

# Strategies that need no EmbeddingService, in ranges that keep one screen to seconds here.
RESTRICTION = {
    "strategies": {
        "item_knn": {},
        "als": {"factors": {"low": 8, "high": 128}, "iterations": {"low": 2, "high": 30}},
    }
}
PROPOSERS: dict[str, Callable[[int | None], Proposer]] = {"random": RandomProposer, "tpe": TpeProposer}


def search(backend: GrpcBackend, space: SearchSpace, proposer_name: str, seed: int, budget: int) -> list[float]:
    """NDCG of each configuration the proposer chose, in order."""
    proposer = PROPOSERS[proposer_name](seed)
    history: list[Observation] = []
    taken: set[str] = set()
    for _ in range(budget):
        (proposal,) = proposer.propose(space, 1, taken, history)
        screen = backend.evaluate(proposal.configuration, 10)
        history.append(Observation(proposal.configuration, screen.ndcg))
        taken.add(proposal.configuration.key())
    return [observation.value for observation in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=30, help="configurations screened per proposer and seed")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    process, address = start_child_service("scoring", "--dataset", str(DATA), "--embedding-address", "127.0.0.1:9")
    try:
        assert wait_serving([address], 300)[address] == "SERVING"
        # Only ScoringService is called: the policy and metrics channels stay unused.
        backend = GrpcBackend(address, address, address, ClientOptions(deadline_seconds=600))
        space = backend.search_space().narrowed(RESTRICTION)
        started = time.perf_counter()
        defaults = {name: backend.evaluate(Configuration(name, {}), 10).ndcg for name in space.names()}
        runs = {
            name: [search(backend, space, name, seed, args.budget) for seed in range(1, args.seeds + 1)]
            for name in PROPOSERS
        }
        seconds = time.perf_counter() - started
        backend.close()
    finally:
        process.terminate()
        process.wait()

    best_default = max(defaults.values())
    summary: dict[str, dict[str, Any]] = {}
    for name, seeds in runs.items():
        best = [max(ndcgs) for ndcgs in seeds]
        summary[name] = {
            "best_ndcg_per_seed": [round(b, 4) for b in best],
            "best_ndcg_mean": round(statistics.mean(best), 4),
            "mean_ndcg_of_proposals": round(statistics.mean(v for ndcgs in seeds for v in ndcgs), 4),
            "best_so_far_seed1": [round(max(seeds[0][: n + 1]), 4) for n in range(len(seeds[0]))],
        }
    tpe: float = summary["tpe"]["best_ndcg_mean"]
    random_search: float = summary["random"]["best_ndcg_mean"]
    print_json(
        {
            "benchmark": "tuner",
            "strategies": space.names(),
            "budget": args.budget,
            "seeds": args.seeds,
            "default_ndcg": {name: round(value, 4) for name, value in defaults.items()},
            "proposers": summary,
            "ratio_tpe_to_random_best": round(tpe / random_search, 3),
            # What going live costs: every proposal that passes the screen takes traffic.
            "ratio_tpe_to_random_mean_proposal": round(
                summary["tpe"]["mean_ndcg_of_proposals"] / summary["random"]["mean_ndcg_of_proposals"], 3
            ),
            "ratio_tpe_to_best_default": round(tpe / best_default, 3),
            "ratio_random_to_best_default": round(random_search / best_default, 3),
            "seconds": round(seconds, 1),
        }
    )


if __name__ == "__main__":
    main()
