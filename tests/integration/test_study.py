"""`rectune study` as a user runs it: the installed script in a subprocess, on CSV files,
starting its own EmbeddingService and ScoringService (real, on loopback)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rectune.datasets import MOVIELENS_100K, load_movielens_atomic

pytestmark = pytest.mark.integration

RECTUNE = Path(sys.executable).parent / "rectune"


def write_csvs(folder: Path, users: int = 150) -> tuple[Path, Path]:
    """The first ``users`` MovieLens users' interactions and the items they rated."""
    items, interactions = load_movielens_atomic(MOVIELENS_100K)
    kept = [x for x in interactions if int(x.user_id) <= users]
    rated = {x.item_id for x in kept}
    items_csv, interactions_csv = folder / "items.csv", folder / "interactions.csv"
    with items_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "text"])
        writer.writerows([item.item_id, item.text] for item in items if item.item_id in rated)
    with interactions_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "rating", "timestamp"])
        writer.writerows([x.user_id, x.item_id, x.value, int(x.time)] for x in kept)
    return items_csv, interactions_csv


def study(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RECTUNE), "study", *flags], capture_output=True, text=True, timeout=900)


def test_a_study_searches_within_its_budget_and_writes_its_choice_and_record(tmp_path) -> None:
    items_csv, interactions_csv = write_csvs(tmp_path)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"strategies": {"popularity": {}, "als": {"iterations": {"low": 3, "high": 9}}}}))
    out = tmp_path / "study.json"
    flags = [f"--items-csv={items_csv}", f"--interactions-csv={interactions_csv}", "--minutes=0.05", "--seed=2"]
    done = study(*flags, "--proposer=tpe", f"--search-space-file={space}", f"--out={out}")
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    chosen = document["chosen"]
    assert chosen["strategy"] in ("popularity", "als")
    if chosen["strategy"] == "als":
        assert isinstance(chosen["params"]["factors"], int) and isinstance(chosen["params"]["alpha"], float)
    assert f"chosen: {chosen['strategy']}" in done.stdout and str(out) in done.stdout
    trials = document["trials"]
    assert [t["source"] for t in trials[:2]] == ["default", "default"]
    assert all(t["source"] == "tuner-tpe" for t in trials[2:]) and len(trials) > 2
    als_default = next(t for t in trials if t["configuration"]["strategy"] == "als")
    # 15 sweeps by default, out of the narrowed range: the default is the declared one,
    # screened a ninth, a third and all of its sweeps.
    assert [s["training_budget"] for s in als_default["stages"]] == [round(2 / 15, 4), round(5 / 15, 4), 1.0]
    assert document["study"]["trials"] == len(trials)
    assert document["study"]["screens"] == sum(len(t["stages"]) for t in trials)
    assert document["choice"]["best_validation_ndcg"] >= document["choice"]["best_default_validation_ndcg"]


def test_a_study_refuses_a_missing_file_naming_the_flag(tmp_path) -> None:
    done = study(f"--items-csv={tmp_path / 'none.csv'}", f"--interactions-csv={tmp_path / 'none.csv'}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"rectune study: --items-csv: no such file {str(tmp_path / 'none.csv')!r}"
