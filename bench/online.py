"""Online learning on against frozen, on the same simulated traffic (issue #18).

``--strategy`` als (the default) or two_tower (item vectors from a real EmbeddingService
started in this process). The moving world of demo/simulation.py (MovieLens 100K): the first half of the interactions
by time is what ScoringService knows at start; over the run the rest of the timeline
unfolds, cut into ``--requests`` steps: items are released in the order the data first saw
them, users' own interactions arrive as they happened, and each request comes from the user
of the next real interaction, who clicks by the demo's click model on what they rated later.

Two ScoringService cores run the same configuration on the same steps with the same random
draws (common random numbers):
- online: released items and arriving interactions are added as they come (and clicks go
  back as interactions); ALS folds users' new interactions in at once and the refit policy
  (``--refit-interactions``) refits in the background, checked before every request;
- frozen: the model fitted at start serves the whole run; nothing is added.
Items a user clicked in the run are excluded from their later lists in both.

Requests come at ``--rate`` per second. Printed: clicks of each, clicks on items released
during the run, refits and their seconds,
and RankItems latency of the online core (in-process calls) while a refit runs against
while none does: p50 and p99 of each, and their ratio.

    .venv/bin/python -m bench.online [--requests 6000] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import logs_to_stderr, percentiles_ms, print_json
from bench.encoder import start_embedding_service
from demo.simulation import ClickModel, MovingWorld, Release, clicks
from rectune.datasets import MOVIELENS_100K, load_movielens_atomic
from rectune.domain.events import Interaction, Item
from rectune.v1 import embedding_pb2_grpc
from services.common.clients import make_channel
from services.common.migrations import migrate
from services.common.storage import make_engine
from services.scoring.core.data import ScoringData
from services.scoring.core.freshness import RefitPolicy
from services.scoring.core.service import ScoringCore, ScoringLimits
from services.scoring.core.strategies.registry import default_registry
from services.scoring.core.tables import SCHEMA
from services.scoring.core.threads import one_blas_thread
from services.scoring.core.vectors import ItemVectors, VectorStore
from services.scoring.embedding_client import GrpcTextEncoder

K = 10
NEVER = RefitPolicy(0, 0, 0)
CLICK_VALUE = 4.0  # a click goes back as an interaction of a liked item


class Arm:
    """One ScoringService core serving one configuration through the run."""

    def __init__(
        self,
        world: MovingWorld,
        items: list[str],
        online: bool,
        policy: RefitPolicy,
        strategy: str,
        encoder: GrpcTextEncoder | None,
        folder: Path,
    ) -> None:
        self.online, self.world = online, world
        data = ScoringData()
        vectors = None
        if encoder is not None:  # two_tower's item tower reads the encoder's vectors
            engine = make_engine(f"sqlite:///{folder / 'vectors.db'}")
            migrate(engine, SCHEMA)
            vectors = ItemVectors(data, encoder, VectorStore(engine))
        registry = default_registry(vectors)
        limits = ScoringLimits(refit=policy if online else NEVER, fit_in_child_process=True)
        self.core = ScoringCore(registry, limits, data, vectors)
        self.core.upsert_items(self.items(items), embed=encoder is not None)
        self.core.data.add_interactions(world.initial)
        self.configuration = self.core.configuration(strategy, {})
        started = time.perf_counter()
        self.core.fitted(self.configuration)
        self.initial_fit_seconds = time.perf_counter() - started
        self.clicks = 0
        self.new_item_clicks = 0
        self.latency_during_refit: list[float] = []
        self.latency_otherwise: list[float] = []

    def before(self, step: Release) -> None:
        if not self.online:
            return
        if step.items:
            self.core.upsert_items(self.items(step.items), embed=self.core.vectors is not None)
        if step.interactions:
            self.core.add_interactions(step.interactions)
        self.core.refresh()

    def items(self, item_ids: list[str]) -> list[Item]:
        return [Item(item_id, self.world.texts[item_id]) for item_id in item_ids]

    def serve(self, user_id: str, excluded: list[str]) -> list[str]:
        refitting = self.core.fitting()
        started = time.perf_counter()
        ranked = self.core.rank(self.configuration, user_id, [], K, excluded, seed=1)
        seconds = time.perf_counter() - started
        (self.latency_during_refit if refitting else self.latency_otherwise).append(seconds)
        return [scored.item_id for scored in ranked]

    def after(self, step: Release, clicked: list[str]) -> None:
        if not self.online:
            return
        feedback = [Interaction(step.user_id, item_id, CLICK_VALUE, step.asker.time) for item_id in clicked]
        self.core.add_interactions([*feedback, step.asker])


def run(world: MovingWorld, steps: list[Release], arms: dict[str, Arm], seed: int, rate: float) -> None:
    """The steps at ``rate`` requests per second (a refit then takes a part of the run, as in
    a service, instead of all of it)."""
    model = ClickModel()
    clicked_by_user: dict[str, dict[str, set[str]]] = {name: {} for name in arms}
    began = time.perf_counter()
    for index, step in enumerate(steps):
        pause = began + index / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        draws = np.random.default_rng([seed, index])
        uniforms, noise = draws.random(K), draws.uniform(1 - model.noise, 1 + model.noise, K)
        interest = world.interest(step.user_id, step.asker.time)
        for name, arm in arms.items():
            arm.before(step)
            seen = clicked_by_user[name].setdefault(step.user_id, set())
            shown = arm.serve(step.user_id, sorted(seen))
            chosen = [
                item for item, hit in zip(shown, clicks(model, interest, shown, uniforms, noise), strict=True) if hit
            ]
            arm.clicks += len(chosen)
            arm.new_item_clicks += sum(item not in world.initial_items for item in chosen)
            seen.update(chosen)
            arm.after(step, chosen)


def summary(arm: Arm) -> dict[str, Any]:
    fitted = arm.core.fitted(arm.configuration)
    result: dict[str, Any] = {
        "clicks": arm.clicks,
        "stored_model_bytes": len(pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL)),
        "clicks_on_items_released_during_the_run": arm.new_item_clicks,
        "initial_fit_seconds": round(arm.initial_fit_seconds, 3),
        "catalogue_at_end": arm.core.data.n_items,
        "interactions_at_end": arm.core.data.n_interactions,
        "bytes_per_interaction": round(arm.core.data.interaction_bytes() / max(arm.core.data.n_interactions, 1), 1),
        "model_items_at_end": fitted.model.n_items,
    }
    if arm.online:
        during, otherwise = arm.latency_during_refit, arm.latency_otherwise
        result |= {
            "refits": fitted.refits,
            "refit_seconds_last": round(fitted.seconds, 3),
            "rank_during_refit_ms": percentiles_ms(during) | {"calls": len(during)},
            "rank_without_refit_ms": percentiles_ms(otherwise) | {"calls": len(otherwise)},
            "p99_ratio_during_refit": round(np.percentile(during, 99) / np.percentile(otherwise, 99), 3)
            if during and otherwise
            else None,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start-share", type=float, default=0.5, help="share of the timeline known at start")
    parser.add_argument("--strategy", choices=("als", "two_tower"), default="als")
    parser.add_argument("--refit-interactions", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    args = parser.parse_args()
    if args.requests < 1 or not 0 < args.start_share < 1 or args.refit_interactions < 1 or args.rate <= 0:
        parser.error("--requests >= 1, 0 < --start-share < 1, --refit-interactions >= 1, --rate > 0")
    logs_to_stderr()
    one_blas_thread()  # as ScoringService's entry point does
    started = time.perf_counter()
    items, interactions = load_movielens_atomic(MOVIELENS_100K)
    world = MovingWorld.of(interactions, {item.item_id: item.text for item in items}, args.start_share)
    steps = world.releases(args.requests)
    initial_items = [item.item_id for item in items if item.item_id in world.initial_items]
    policy = RefitPolicy(interactions=args.refit_interactions, share=0.0, max_age_seconds=0.0)
    service, encoder = None, None
    if args.strategy == "two_tower":
        service, address = start_embedding_service()
        encoder = GrpcTextEncoder(embedding_pb2_grpc.EmbeddingServiceStub(make_channel(address)))
    folder = Path(tempfile.mkdtemp(prefix="rectune-bench-online-"))
    arms = {
        "online": Arm(world, initial_items, True, policy, args.strategy, encoder, folder),
        "frozen": Arm(world, initial_items, False, policy, args.strategy, encoder, folder),
    }
    # The world's hundred thousand Interaction objects would make each full garbage
    # collection a pause of tens of milliseconds in the middle of the timings; they live
    # to the end, so they are moved out of the collector's way.
    gc.collect()
    gc.freeze()
    try:
        run(world, steps, arms, args.seed, args.rate)
        arms["online"].core.wait_for_fits()
    finally:
        if service is not None:
            service.stop(0)
    online, frozen = summary(arms["online"]), summary(arms["frozen"])
    print_json(
        {
            "benchmark": "online",
            "strategy": f"{args.strategy} (defaults)",
            "requests": args.requests,
            "seed": args.seed,
            "items_at_start": len(world.initial_items),
            "items_released_during_the_run": sum(len(step.items) for step in steps),
            "interactions_at_start": len(world.initial),
            "interactions_during_the_run": len(world.timeline),
            "refit_policy": {"interactions": args.refit_interactions},
            "rate_per_second": args.rate,
            "online": online,
            "frozen": frozen,
            "clicks_ratio_online_to_frozen": round(online["clicks"] / max(frozen["clicks"], 1), 3),
            "seconds": round(time.perf_counter() - started, 1),
        }
    )


if __name__ == "__main__":
    main()
