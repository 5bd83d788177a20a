"""The two_tower strategy against the classical ones, and tuned, on MovieLens 100K.

One time-based split (per user, the last 20% of interactions by time are the test split;
the last 20% of the rest the validation split, as in bench/tuner.py). In the same run:
- every strategy at its defaults, fitted on the training part and scored on test:
  NDCG@10, Recall@10, fit seconds; two_tower's epochs and seconds per epoch;
- cold items: test interactions with items that have no interaction in the training part
  (items first seen after each user's split time). Two measures per strategy: NDCG@10 and
  Recall@10 over the whole catalogue when only those items count as relevant (what a list
  shows without special handling of new items), and the new-item shelf: NDCG@10 of the
  ranking of the cold items only (a "new releases" row), ties broken at random (the mean
  over 20 draws), next to the chance level of a random order;
- calibration: two_tower's own sigmoid(u·v) against Platt scaling (expected calibration
  error on each user's newest interaction, as ScoringService decides which to keep), with
  the softmax loss and with binary cross-entropy against 4 negatives;
- two_tower tuned: the tuner's default proposer (pool: TPE draws candidates, the language
  model picks one) proposes ``--budget`` configurations of the two_tower space, each scored
  on validation only; tuner.selection chooses one (a default stays unless beaten with 90%
  confidence); that one is scored once on test. Several seeds; the paired bootstrap 95%
  interval of the tuned minus the default's test NDCG@10 over seeds;
- fine-tuning the encoder: two_tower at its defaults with ``finetune_layers`` 0, 1 and 2
  (otherwise equal), each fitted on the validation split's training part (scored on
  validation) and on the test split's (scored once on test), for ``--finetune-seeds``
  training seeds: NDCG@10, Recall@10, cold-item NDCG, the new-item shelf, fit seconds, and
  the paired 95% intervals of each fine-tuned setting's difference to the frozen one
  (``--only-finetuning`` runs this part alone).

Item vectors come from a real EmbeddingService (all-MiniLM-L6-v2) started in this process,
through ScoringService's own client and vector store, as in production. Fits run on
ScoringService's code in this process (what is measured is the model, not the transport).
A two_tower fit is bounded by ``--max-fit-seconds`` (60: the issue's bound on 2 cores).

    .venv/bin/python -m bench.two_tower [--budget 40] [--seeds 3] [--finetune-seeds 3] [--only-finetuning]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from bench.common import logs_to_stderr, print_json
from bench.encoder import item_vectors, start_embedding_service
from bench.tuner import Evaluator, data_shape, paired_interval, proposer_makers, search
from rectune.datasets import MOVIELENS_100K, load_movielens_atomic
from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.space import SearchSpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.fitting import calibrate, calibration_split, evaluate_model
from services.scoring.core.ranking import Split, ranking_metrics, time_split
from services.scoring.core.strategies.base import FittedModel, ScoringContext, Strategy
from services.scoring.core.strategies.registry import default_registry
from services.scoring.core.strategies.two_tower import TwoTower
from services.scoring.core.vectors import ItemVectors
from tuner.selection import choose
from tuner.space import narrowed

K = 10
TIE_DRAWS = 20
STRATEGIES = ("popularity", "item_knn", "als", "content", "hybrid", "two_tower")
# Ranges that keep one evaluation to seconds and the 40 of a seed to about ten minutes on
# 2 cores (a production search space can be wider: ScoringService declares the full ranges);
# the fit bound (--max-fit-seconds) caps the rest.
SEARCH = {
    "strategies": {
        "two_tower": {
            "epochs": {"low": 2, "high": 12},
            "batch_size": {"low": 128, "high": 1024},
            "dimension": {"low": 16, "high": 128},
            "hidden_size": {"low": 16, "high": 256},
            "history_length": {"low": 10, "high": 100},
            "negatives": {"low": 64, "high": 2048},
        }
    }
}


def cold_items(split: Split) -> set[int]:
    """Items held out for some user but never interacted with in the training part."""
    held = set(np.concatenate(list(split.held_out.values())).tolist())
    return held - set(split.train.items.tolist())


def cold_held_out(split: Split, cold: set[int]) -> dict[int, np.ndarray]:
    picked = {user: np.array(sorted(set(items.tolist()) & cold)) for user, items in split.held_out.items()}
    return {user: items for user, items in picked.items() if len(items)}


def shelf_ndcg(model: FittedModel | None, split: Split, cold_split: dict[int, np.ndarray]) -> float:
    """NDCG@K of ranking the cold items alone for each user with cold test items
    (``cold_split``); ties broken at random (mean over TIE_DRAWS draws). None: every score
    equal (chance)."""
    candidates = np.unique(np.concatenate(list(cold_split.values())))
    histories = split.train.histories()
    as_of = float(split.train.times.max())
    rng = np.random.default_rng(0)
    values = []
    for user, relevant in sorted(cold_split.items()):
        if model is None:
            scores = np.zeros(len(candidates))
        else:
            scores = model.scores(ScoringContext(histories[user], user, as_of))[candidates]
        for _ in range(TIE_DRAWS):
            order = np.lexsort((rng.random(len(candidates)), -scores))
            values.append(ranking_metrics(candidates[order], set(relevant.tolist()), K)[0])
    return float(np.mean(values))


def default_results(registry: Mapping[str, Strategy], split: Split, cold: set[int]) -> dict[str, Any]:
    """Each strategy at its defaults: fitted on the training part, scored on test."""
    cold_split = cold_held_out(split, cold)
    results: dict[str, Any] = {"chance": {"new_item_shelf_ndcg": round(shelf_ndcg(None, split, cold_split), 4)}}
    for name in STRATEGIES:
        strategy = registry[name]
        started = time.perf_counter()
        model = strategy.fit(split.train, strategy.space.canonical({}), None)
        seconds = time.perf_counter() - started
        results[name] = scored(model, split.train, split.held_out, cold_split) | {
            "new_item_shelf_ndcg": round(shelf_ndcg(model, split, cold_split), 4),
            "fit_seconds": round(seconds, 2),
        }
        training = getattr(model, "training", None)
        if training is not None:
            results[name]["training"] = {
                "epochs_run": training.epochs_run,
                "best_epoch": training.best_epoch,
                "stopped_because": training.stopped_because,
                "seconds_per_epoch": round(training.seconds_per_epoch, 2),
                "device": training.device,
            }
    return results


def scored(
    model: FittedModel, train: TrainingData, held_out: dict[int, np.ndarray], cold: dict[int, np.ndarray]
) -> dict[str, Any]:
    everything = evaluate_model(model, train, held_out, K)
    new_items = evaluate_model(model, train, cold, K)
    return {
        "ndcg": round(everything.ndcg, 4),
        "recall": round(everything.recall, 4),
        "cold_item_ndcg": round(new_items.ndcg, 4),
        "cold_item_recall": round(new_items.recall, 4),
    }


def tuned(args: argparse.Namespace, registry: Mapping[str, Strategy], test_split: Split, cache: Path) -> dict[str, Any]:
    validation = Evaluator("two-tower-validation", time_split(test_split.train, 0.2), cache, registry)
    test = Evaluator("two-tower-test", test_split, cache, registry)
    space = narrowed(SearchSpace((registry["two_tower"].space,)), SEARCH)
    defaults = [Configuration("two_tower", {})]
    shape = data_shape(validation.split.train).summary()
    make = proposer_makers(["pool"], args.lm_cache_dir)["pool"]
    runs: dict[str, list[Any]] = {"test": [], "chosen": [], "kept": [], "proposal_mean": [], "seconds": []}
    default_test = float(test.scores(defaults[0]).mean())
    for seed in range(1, args.seeds + 1):
        scores, by_key, means, _ = search(make(seed), space, validation, defaults, args.budget, shape)
        choice = choose(scores, [c.key() for c in defaults], seed=seed)
        runs["test"].append(float(test.scores(by_key[choice.key]).mean()))
        runs["chosen"].append(by_key[choice.key].as_dict())
        runs["kept"].append(choice.kept_default)
        runs["proposal_mean"].append(statistics.mean(means))
        validation.save()
        test.save()
        print(f"seed {seed}: test NDCG@10 {runs['test'][-1]:.4f}", file=sys.stderr, flush=True)
    return {
        "proposer": "pool (the tuner's default)",
        "budget": args.budget,
        "seeds": args.seeds,
        "search_space": SEARCH,
        "default_test_ndcg": round(default_test, 4),
        "tuned_test_ndcg_mean": round(statistics.mean(runs["test"]), 4),
        "tuned_test_ndcg_per_seed": [round(v, 4) for v in runs["test"]],
        "difference_to_default_95ci": paired_interval([v - default_test for v in runs["test"]]),
        "kept_the_default_in_seeds": sum(runs["kept"]),
        "validation_ndcg_mean_of_proposals": round(statistics.mean(runs["proposal_mean"]), 4),
        "chosen": runs["chosen"],
        "evaluation_seconds": round(validation.seconds + test.seconds, 1),
    }


FINETUNE_LAYERS = (0, 1, 2)


def finetuning_results(
    vectors: ItemVectors, max_fit_seconds: float, test_split: Split, cold: set[int], seeds: int
) -> dict[str, Any]:
    """two_tower at its defaults with 0, 1 and 2 fine-tuned encoder layers, otherwise equal:
    each fitted on the validation split's training part (scored on validation) and on the
    test split's (scored once on test), for several training seeds; paired differences to 0."""
    validation = time_split(test_split.train, 0.2)
    cold_split = cold_held_out(test_split, cold)
    runs: dict[int, dict[str, list[float]]] = {layers: {} for layers in FINETUNE_LAYERS}
    for seed in range(1, seeds + 1):
        strategy = TwoTower(vectors, max_fit_seconds, seed=seed)
        for layers in FINETUNE_LAYERS:
            params = strategy.space.canonical({"finetune_layers": layers})
            on_validation = strategy.fit(validation.train, params, None)
            started = time.perf_counter()
            model = strategy.fit(test_split.train, params, None)
            seconds = time.perf_counter() - started
            numbers = scored(model, test_split.train, test_split.held_out, cold_split)
            found = {
                "validation_ndcg": evaluate_model(on_validation, validation.train, validation.held_out, K).ndcg,
                "test_ndcg": numbers["ndcg"],
                "test_recall": numbers["recall"],
                "cold_item_ndcg": numbers["cold_item_ndcg"],
                "new_item_shelf_ndcg": shelf_ndcg(model, test_split, cold_split),
                "fit_seconds": seconds,
                "seconds_per_epoch": model.training.seconds_per_epoch if model.training else 0.0,
            }
            for name, value in found.items():
                runs[layers].setdefault(name, []).append(float(value))
            print(f"finetune_layers {layers} seed {seed}: {found}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"seeds": seeds, "settings": "two_tower defaults, finetune_layers varied"}
    for layers, values in runs.items():
        summary: dict[str, Any] = {name: round(statistics.mean(v), 4) for name, v in values.items()}
        if layers:
            for name in ("validation_ndcg", "test_ndcg", "test_recall", "cold_item_ndcg", "new_item_shelf_ndcg"):
                differences = [a - b for a, b in zip(values[name], runs[0][name], strict=True)]
                summary[f"{name}_difference_to_frozen_95ci"] = paired_interval(differences)
            summary["fit_seconds_ratio_to_frozen"] = round(
                statistics.mean(values["fit_seconds"]) / statistics.mean(runs[0]["fit_seconds"]), 2
            )
        result[f"finetune_layers_{layers}"] = summary
    return result


def calibration_results(registry: Mapping[str, Strategy], data: TrainingData) -> dict[str, Any]:
    """What ScoringService's fit decides for two_tower: its own sigmoid(u·v) or Platt scaling."""
    strategy = registry["two_tower"]
    train, held_out = calibration_split(data)
    results = {}
    variants: dict[str, dict[str, ParamValue]] = {
        "sampled_softmax": {},
        "bce_4_negatives": {"loss": "bce", "negatives": 4},
    }
    for label, params in variants.items():
        model = strategy.fit(train, strategy.space.canonical(params), None)
        _, report = calibrate(model, train, held_out)
        ece = {report.method: report.ece, "platt" if report.method == "model" else "model": report.alternative_ece}
        results[label] = {
            "kept": report.method,
            "ece_model_sigmoid": round(ece["model"], 4),
            "ece_platt": round(ece["platt"], 4),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=40, help="two_tower configurations proposed per seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-fit-seconds", type=float, default=60.0)
    parser.add_argument("--skip-tuning", action="store_true", help="only the defaults and cold items")
    parser.add_argument("--finetune-seeds", type=int, default=3, help="training seeds of the fine-tuning comparison")
    parser.add_argument(
        "--only-finetuning", action="store_true", help="only the fine-tuning comparison (finetune_layers 0, 1, 2)"
    )
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "rectune-bench-two-tower"))
    parser.add_argument("--lm-cache-dir", default=str(Path(tempfile.gettempdir()) / "rectune-lm"))
    args = parser.parse_args()
    for name, value in (
        ("--budget", args.budget),
        ("--seeds", args.seeds),
        ("--max-fit-seconds", args.max_fit_seconds),
    ):
        if value <= 0:
            parser.error(f"{name}: must be > 0, got {value}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logs_to_stderr()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    items, interactions = load_movielens_atomic(MOVIELENS_100K)
    data = ScoringData()
    data.upsert_items(items)
    data.add_interactions(interactions)
    service, address = start_embedding_service()
    try:
        vectors = item_vectors(data, address, cache)
        registry = default_registry(vectors, args.max_fit_seconds)
        test_split = time_split(data.snapshot(), 0.2)
        cold = cold_items(test_split)
        finetuning = finetuning_results(vectors, args.max_fit_seconds, test_split, cold, args.finetune_seeds)
        if args.only_finetuning:
            print_json({"benchmark": "two_tower", "finetuning": finetuning, "cpu_threads": torch.get_num_threads()})
            return
        result: dict[str, Any] = {
            "benchmark": "two_tower",
            "dataset": data_shape(test_split.train).summary(),
            "k": K,
            "cpu_threads": torch.get_num_threads(),
            "cold_items": len(cold),
            "users_with_cold_test_items": len(cold_held_out(test_split, cold)),
            "defaults_on_test": default_results(registry, test_split, cold),
            "two_tower_calibration": calibration_results(registry, data.snapshot()),
            "finetuning": finetuning,
        }
        if not args.skip_tuning:
            result["two_tower_tuned"] = tuned(args, registry, test_split, cache)
        result["cuda"] = (
            "measured above (device cuda)" if torch.cuda.is_available() else "not measured: no CUDA device here"
        )
    finally:
        service.stop(0)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print_json(result)


if __name__ == "__main__":
    main()
