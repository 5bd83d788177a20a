"""``rectune study``: the default tuner, offline, on a user's own data.

    rectune study --items-csv items.csv --interactions-csv interactions.csv --minutes 15 --seed 1 --out study.json

Starts an EmbeddingService and a ScoringService of its own (child processes on loopback,
their databases in a temporary folder), loads the CSVs (the generic format ScoringService
loads), and searches the whole space for ``--minutes`` of wall clock, as ``tuner run``
would: the defaults first, then proposals from the default proposer, screened through
multi-fidelity screens on ScoringService's holdout (the last 20% of each user's
interactions), which is this study's validation split: keep your own test split out of the
CSVs and score the chosen configuration on it once.

The choice: the configuration with the best validation NDCG@k among those evaluated in
full; it replaces the best default only if it clears it in at least 90% of paired
bootstrap resamples of the holdout users (tuner.selection's rule, through ScoringService's
paired comparison). The JSON holds ``chosen`` (strategy and params with their JSON types),
the validation numbers, and the study's record: every screen with its fidelity, value,
seconds and source.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from rectune.domain.comparison import CONFIDENCE
from rectune.domain.configuration import Configuration
from rectune.domain.fidelity import Fidelity
from rectune.domain.space import SearchSpace, SpaceError
from rectune.v1 import scoring_pb2_grpc
from services.common.child import start_child_service
from services.common.clients import Channels, ClientOptions
from services.common.config import SettingsError, load_settings, option
from services.common.wait_healthy import wait_serving
from tuner.blend import BLEND
from tuner.clients import ScoringScreens
from tuner.errors import TunerError
from tuner.factory import make_engine, make_proposer
from tuner.proposers import Briefing
from tuner.screen import Screen
from tuner.settings import SearchSettings
from tuner.sources import records
from tuner.space import default_space, load_restriction, narrowed
from tuner.study import StudyRecord, Trial, run_study

# Loading the CSVs and embedding every item's text happen before the search's clock starts.
STARTUP_SECONDS = 1800.0


@dataclass(frozen=True)
class StudySettings(SearchSettings):
    """rectune study: the default tuner run offline on your own data (see docs/tuner.md)."""

    items_csv: str = option(
        env="RECTUNE_STUDY_ITEMS_CSV", required=True, help="items CSV: item_id and text (or title, genres)"
    )
    interactions_csv: str = option(
        env="RECTUNE_STUDY_INTERACTIONS_CSV",
        required=True,
        help="interactions CSV: user_id, item_id, rating, timestamp (unix seconds)",
    )
    minutes: float = option(env="RECTUNE_STUDY_MINUTES", default=15.0, help="wall-clock budget of the search")
    out: str = option(env="RECTUNE_STUDY_OUT", default="study.json", help="where the JSON result is written")
    evaluation_k: int = option(env="RECTUNE_TUNER_EVALUATION_K", default=10, help="k of the offline NDCG@k")
    max_fit_seconds: float = option(
        env="RECTUNE_SCORING_MAX_FIT_SECONDS",
        default=300.0,
        help="bound of one two_tower fit (it keeps its best epoch when the bound is reached)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for flag, path in (("--items-csv", self.items_csv), ("--interactions-csv", self.interactions_csv)):
            if not Path(path).is_file():
                raise SettingsError(f"{flag}: no such file {path!r}")
        if not self.minutes > 0:
            raise SettingsError(f"--minutes: must be > 0, got {self.minutes}")
        if self.evaluation_k < 1:
            raise SettingsError(f"--evaluation-k: must be >= 1, got {self.evaluation_k}")
        if not self.max_fit_seconds > 0:
            raise SettingsError(f"--max-fit-seconds: must be > 0, got {self.max_fit_seconds}")


class StudyServices:
    """An EmbeddingService and a ScoringService loaded with the study's data (their database
    in a temporary folder), stopped and removed on exit."""

    def __init__(self, settings: StudySettings) -> None:
        self.settings = settings
        self.folder = Path(tempfile.mkdtemp(prefix="rectune-study-"))
        self.processes: list[subprocess.Popen[str]] = []
        self.channels = Channels()

    def __enter__(self) -> ScoringScreens:
        embedding, embedding_address = start_child_service("services.embedding")
        self.processes.append(embedding)
        scoring, address = start_child_service(
            "services.scoring",
            f"--items-csv={self.settings.items_csv}",
            f"--interactions-csv={self.settings.interactions_csv}",
            f"--embedding-address={embedding_address}",
            f"--database-url=sqlite:///{self.folder / 'scoring.db'}",
            f"--max-fit-seconds={self.settings.max_fit_seconds}",
        )
        self.processes.append(scoring)
        status = wait_serving([embedding_address, address], STARTUP_SECONDS)
        if set(status.values()) != {"SERVING"}:
            raise TunerError(f"the study's services did not start: {status}")
        channel = self.channels.open("scoring", address, ClientOptions())
        return ScoringScreens(scoring_pb2_grpc.ScoringServiceStub(channel))

    def __exit__(self, *exc: object) -> None:
        self.channels.close()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def study(settings: StudySettings, screens: ScoringScreens) -> dict[str, Any]:
    """The search and the choice, as the JSON document the command writes."""
    described, shape = screens.describe()
    space = searched_space(settings, described)
    # Canonical by the declared spaces: a default may lie outside an operator's narrower range.
    declared = described.by_strategy()
    # A blend at its defaults is als at its defaults: not screened twice.
    defaults = [Configuration(name, declared[name].canonical({})) for name in space.without(BLEND).names()]
    k = settings.evaluation_k

    def evaluate(configuration: Configuration, fidelity: Fidelity) -> Screen:
        return screens.evaluate(configuration, k, fidelity=fidelity)

    started = time.perf_counter()
    record = run_study(
        make_proposer(settings, k),
        make_engine(settings),
        space,
        evaluate,
        defaults,
        settings.minutes * 60,
        Briefing(data=shape.summary()),
        lambda c: Configuration(c.strategy, declared[c.strategy].canonical(c.params)),
    )
    chosen, choice = chosen_configuration(record, screens, k)
    return {
        "chosen": chosen.as_dict(),
        "choice": choice,
        "data": shape.summary(),
        "space": space.names(),
        "minutes": settings.minutes,
        "seed": settings.seed,
        "proposer": settings.proposer,
        "screening": settings.screening,
        "search_seconds": round(time.perf_counter() - started, 1),
        "study": record.summary(),
        "sources": sources_record(record),
        "trials": [trial.as_dict() for trial in record.trials],
    }


def sources_record(record: StudyRecord) -> dict[str, dict[str, int]]:
    """Each proposal source's wins and proposals in this study (tuner.sources)."""
    names = sorted({trial.source for trial in record.trials if not trial.is_default})
    return {name: {"wins": r.wins, "proposals": r.proposals} for name, r in records(record.history(), names).items()}


def searched_space(settings: StudySettings, described: SearchSpace) -> SearchSpace:
    if settings.search_space_file:
        return narrowed(described, load_restriction(settings.search_space_file))
    return default_space(described)


def chosen_configuration(record: StudyRecord, screens: ScoringScreens, k: int) -> tuple[Configuration, dict[str, Any]]:
    """The best configuration evaluated in full, unless no better than the best default with confidence."""
    complete = record.complete()
    best_default = max((t for t in complete if t.is_default), key=_ndcg)
    best = max(complete, key=_ndcg)
    choice: dict[str, Any] = {
        "best_default": best_default.staged.configuration.as_dict(),
        "best_default_validation_ndcg": round(_ndcg(best_default), 6),
        "best_validation_ndcg": round(_ndcg(best), 6),
    }
    if best.is_default:
        return best.staged.configuration, {**choice, "kept_default": True, "reason": "a default scored best"}
    compared = screens.evaluate(best.staged.configuration, k, best_default.staged.configuration, 1.0)
    clears = compared.probability_clears or 0.0
    choice.update(probability_beats_default=round(clears, 3))
    needs = f"of paired resamples of the holdout users (needs {CONFIDENCE:.0%})"
    if clears >= CONFIDENCE:
        reason = f"clears the best default in {clears:.0%} {needs}"
        return best.staged.configuration, {**choice, "kept_default": False, "reason": reason}
    reason = f"the best found clears the best default in only {clears:.0%} {needs}"
    return best_default.staged.configuration, {**choice, "kept_default": True, "reason": reason}


def _ndcg(trial: Trial) -> float:
    return trial.staged.final.ndcg


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(StudySettings, argv, prog="rectune study")
    except SettingsError as exc:
        print(f"rectune study: {exc}", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with StudyServices(settings) as screens:
            document = study(settings, screens)
    except (TunerError, SpaceError) as exc:
        print(f"rectune study: {exc}", file=sys.stderr)
        return 1
    Path(settings.out).write_text(json.dumps(document, indent=2) + "\n")
    chosen = document["chosen"]
    print(f"chosen: {chosen['strategy']} {json.dumps(chosen['params'])} -> {settings.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
