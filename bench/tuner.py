"""The tuner's search methods against each other, measured as a careful user would.

Protocol (docs/tuner.md, "Measuring tuning"): MovieLens 100K; per user, the last 20% of
interactions by time are the test split, the last 20% of the rest the validation split.
Each method searches the whole space (every strategy, two_tower and content included, with
ranges that bound one fit's cost) for the same wall-clock budget (``--minutes``), scored on
validation only (NDCG@10): the defaults first (each strategy untuned), then one proposal at
a time (tuner.study.run_study). Then tuner.selection chooses one configuration of those
evaluated in full (re-checked on bootstrap resamples of the validation users; a default
stays unless beaten with 90% confidence), and that one is scored once on the test split,
which no search saw. Several seeds; paired bootstrap 95% intervals over seeds.

Methods, in the same run:
- ``default``: the tuner's default, the source bandit (TPE, the language model's pick from
  TPE's pool, the model's zero-shot proposals as a warm start, blends of the best screened
  configurations) with multi-fidelity screens;
- ``tpe-mf``: TPE alone (no blends) with the same multi-fidelity screens;
- ``tpe-full``: TPE alone (no blends), every proposal evaluated in full.
Also: the best untuned default chosen on validation, scored on test.

The clock: each screen is charged the seconds its fit and evaluation took when it was first
computed (screens are cached in ``--cache`` by split and fitted configuration, so a rerun,
or a second method meeting the same configuration, costs no real time but is charged the
same), plus the proposer's own time, measured. Item vectors come from a real
EmbeddingService (all-MiniLM-L6-v2) started in this process; fits run on ScoringService's
code in this process (what is measured is the search, not the transport).

    .venv/bin/python -m bench.tuner [--minutes 10] [--seeds 3] [--methods default,tpe-mf,tpe-full]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from bench.common import logs_to_stderr, print_json
from bench.encoder import item_vectors, start_embedding_service
from rectune.datasets import MOVIELENS_100K, load_movielens_atomic
from rectune.domain.configuration import Configuration
from rectune.domain.data import DataShape
from rectune.domain.fidelity import Fidelity
from rectune.domain.space import SearchSpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.evaluation import budgeted
from services.scoring.core.fit_memo import FitMemo
from services.scoring.core.fitting import user_ndcgs
from services.scoring.core.ranking import Split, time_split
from services.scoring.core.strategies.base import Strategy
from services.scoring.core.strategies.registry import default_registry
from tuner.blend import BLEND, Unblended
from tuner.fidelity import FullFidelity, ScreenEngine, SuccessiveHalving
from tuner.language_model import LanguageModel
from tuner.lm_proposer import LanguageModelProposer
from tuner.pool_proposer import PoolProposer
from tuner.proposers import Briefing, Observation, Proposer, RandomProposer, TpeProposer
from tuner.screen import Screen
from tuner.selection import Choice, choose
from tuner.sources import source_bandit
from tuner.space import default_space
from tuner.study import StudyRecord, run_study
from tuner.study_command import sources_record

K = 10
PROPOSER_NAMES = ("random", "tpe", "pool", "pool-half", "lm")
METHOD_NAMES = ("default", "tpe-mf", "tpe-full")


class Evaluator:
    """Per-user NDCG@K of a configuration on one split, cached on disk by configuration hash."""

    def __init__(
        self,
        name: str,
        split: Split,
        cache: Path,
        registry: Mapping[str, Strategy],
        memo: FitMemo | None = None,
    ) -> None:
        self.split = split
        self.registry = registry
        # The registry's, where it has blends: a blend's members reuse the fits of their own screens.
        self.memo = memo if memo is not None else FitMemo()
        self.path = cache / f"{name}.json"
        self.cache: dict[str, list[float]] = json.loads(self.path.read_text()) if self.path.exists() else {}
        # Seconds each fitted configuration's fit and evaluation took when first computed.
        self.timing_path = cache / f"{name}-seconds.json"
        self.timings: dict[str, float] = json.loads(self.timing_path.read_text()) if self.timing_path.exists() else {}
        self.seconds = 0.0

    def canonical(self, configuration: Configuration) -> Configuration:
        space = self.registry[configuration.strategy].space
        return Configuration(configuration.strategy, space.canonical(configuration.params))

    def scores(self, configuration: Configuration) -> np.ndarray:
        canonical = self.canonical(configuration)
        if canonical.hash not in self.cache:
            started = time.perf_counter()
            model = self.memo.fit(self.registry[canonical.strategy], self.split.train, canonical.params)
            self.cache[canonical.hash] = user_ndcgs(model, self.split.train, self.split.held_out, K).tolist()
            self.seconds += time.perf_counter() - started
        return np.array(self.cache[canonical.hash])

    def screen(self, configuration: Configuration, fidelity: Fidelity) -> Screen:
        """A screen at a fidelity (the training budget scaled as ScoringService scales it),
        with the seconds the fit and evaluation took when first computed."""
        canonical = self.canonical(configuration)
        fitted, used = budgeted(self.registry[canonical.strategy], canonical, fidelity.training_budget)
        before = self.seconds
        values = self.scores(fitted)
        if fitted.hash not in self.timings:
            self.timings[fitted.hash] = self.seconds - before
        return Screen(fitted.hash, float(values.mean()), 0.0, None, Fidelity(used), self.timings[fitted.hash])

    def save(self) -> None:
        self.path.write_text(json.dumps(self.cache))
        self.timing_path.write_text(json.dumps(self.timings))


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


def make_methods(names: Sequence[str], lm_cache_dir: str) -> dict[str, Callable[[int], tuple[Proposer, ScreenEngine]]]:
    """Each method's proposer and screen engine by seed; the language model loads only if needed."""
    methods: dict[str, Callable[[int], tuple[Proposer, ScreenEngine]]] = {
        "tpe-mf": lambda seed: (Unblended(TpeProposer(seed)), SuccessiveHalving()),
        "tpe-full": lambda seed: (Unblended(TpeProposer(seed)), FullFidelity()),
    }
    if "default" in names:
        model = LanguageModel("", lm_cache_dir)
        methods["default"] = lambda seed: (
            source_bandit(seed, PoolProposer(model, seed), LanguageModelProposer(model, seed, rationale_tokens=0)),
            SuccessiveHalving(),
        )
    return methods


def searched(
    method: tuple[Proposer, ScreenEngine],
    space: SearchSpace,
    validation: Evaluator,
    defaults: list[Configuration],
    minutes: float,
    shape: str,
    seed: int,
) -> tuple[StudyRecord, Configuration, Choice]:
    """One method's search on validation and its choice among the configurations evaluated in full."""
    proposer, engine = method
    record = run_study(
        proposer, engine, space, validation.screen, defaults, minutes * 60, Briefing(data=shape), validation.canonical
    )
    complete = {t.staged.configuration.key(): t.staged.configuration for t in record.complete()}
    scores = {key: validation.scores(configuration) for key, configuration in complete.items()}
    choice = choose(scores, [validation.canonical(c).key() for c in defaults], seed=seed)
    return record, complete[choice.key], choice


def method_summary(runs: dict[str, list[Any]], baselines: dict[str, list[float]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "test_ndcg_mean": round(statistics.mean(runs["test"]), 4),
        "test_ndcg_per_seed": [round(v, 4) for v in runs["test"]],
        "chosen": runs["chosen"],
        "kept_the_default_in_seeds": sum(runs["kept"]),
        "screens_per_hour_mean": round(statistics.mean(r["screens_per_hour"] for r in runs["record"]), 1),
        "full_fidelity_share_of_seconds_mean": round(
            statistics.mean(r["full_fidelity_share_of_seconds"] for r in runs["record"]), 3
        ),
        "search": runs["record"],
    }
    for name, values in baselines.items():
        differences = [a - b for a, b in zip(runs["test"], values, strict=True)]
        summary[f"difference_to_{name}"] = round(statistics.mean(differences), 4)
        summary[f"difference_to_{name}_95ci"] = paired_interval(differences)
    if runs["sources"] and any(runs["sources"]):
        summary["sources"] = runs["sources"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of each search (charged)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHOD_NAMES), help=f"of {', '.join(METHOD_NAMES)}")
    parser.add_argument("--max-fit-seconds", type=float, default=60.0, help="bound of one two_tower fit")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "rectune-bench-tuner-wallclock"))
    parser.add_argument("--lm-cache-dir", default=str(Path(tempfile.gettempdir()) / "rectune-lm"))
    args = parser.parse_args()
    for name, value in (
        ("--minutes", args.minutes),
        ("--seeds", args.seeds),
        ("--max-fit-seconds", args.max_fit_seconds),
    ):
        if value <= 0:
            parser.error(f"{name}: must be > 0, got {value}")
    names = args.methods.split(",")
    if set(names) - set(METHOD_NAMES) or not names:
        parser.error(f"--methods: of {', '.join(METHOD_NAMES)}; got {args.methods!r}")
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
        memo = FitMemo()
        registry = default_registry(item_vectors(data, address, cache), args.max_fit_seconds, memo)
        test_split = time_split(data.snapshot(), 0.2)
        validation = Evaluator("validation", time_split(test_split.train, 0.2), cache, registry, memo)
        test = Evaluator("test", test_split, cache, registry, memo)
        space = default_space(SearchSpace(tuple(strategy.space for strategy in registry.values())))
        # A blend at its defaults is als at its defaults: not screened twice.
        defaults = [validation.canonical(Configuration(name, {})) for name in space.without(BLEND).names()]
        shape = data_shape(validation.split.train).summary()
        methods = make_methods(names, args.lm_cache_dir)
        default_validation = {c.key(): float(validation.scores(c).mean()) for c in defaults}
        best_default = max(defaults, key=lambda c: default_validation[c.key()])
        default_test = float(test.scores(best_default).mean())
        results: dict[str, dict[str, list[Any]]] = {
            name: {"test": [], "chosen": [], "kept": [], "record": [], "sources": []} for name in names
        }
        # Methods interleaved seed by seed: whatever else the shared machine runs meanwhile
        # slows each method alike rather than the one that happens to run then.
        for seed in range(1, args.seeds + 1):
            for name in names:
                runs = results[name]
                record, chosen, choice = searched(
                    methods[name](seed), space, validation, defaults, args.minutes, shape, seed
                )
                runs["test"].append(float(test.scores(chosen).mean()))
                runs["chosen"].append(chosen.as_dict())
                runs["kept"].append(choice.kept_default)
                runs["record"].append(record.summary())
                runs["sources"].append(sources_record(record))
                validation.save()
                test.save()
                print(f"{name} seed {seed}: test NDCG@10 {runs['test'][-1]:.4f}", file=sys.stderr, flush=True)
    finally:
        service.stop(0)
    baselines = {"best_default": [default_test] * args.seeds}
    baselines.update({name: results[name]["test"] for name in ("tpe-mf", "tpe-full") if name in results})
    print_json(
        {
            "benchmark": "tuner",
            "protocol": "search on validation within a wall-clock budget, chosen configuration scored once on test",
            "dataset": shape,
            "strategies": space.names(),
            "minutes": args.minutes,
            "seeds": args.seeds,
            "default_validation_ndcg": {key: round(v, 4) for key, v in default_validation.items()},
            "best_default_on_validation": best_default.strategy,
            "best_default_test_ndcg": round(default_test, 4),
            "methods": {
                name: method_summary(runs, {b: v for b, v in baselines.items() if b != name})
                for name, runs in results.items()
            },
            "seconds": round(time.perf_counter() - started, 1),
        }
    )


if __name__ == "__main__":
    main()
