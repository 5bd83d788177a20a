"""ScoringService domain pieces without gRPC: spaces, metrics by hand, splits, loaders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from rectune.datasets import DatasetError, load_interactions, load_items
from rectune.domain.configuration import Configuration
from rectune.domain.errors import InvalidArgument
from rectune.domain.events import Interaction, Item
from rectune.domain.space import StrategySpace, configuration_schema
from services.common.migrations import migrate
from services.common.storage import make_engine
from services.scoring.core.data import History, ScoringData, TrainingData
from services.scoring.core.journal import GAP_SECONDS, DataJournal, _Cursor
from services.scoring.core.ranking import fit_platt, ranking_metrics, time_split, top_k
from services.scoring.core.strategies.base import FittedModel, ScoringContext, Strategy
from services.scoring.core.strategies.popularity import DAY, PopularityModel, decayed_counts
from services.scoring.core.strategies.registry import default_registry, find
from services.scoring.core.tables import SCHEMA, item_vectors

REGISTRY = default_registry()


def canonical(strategy: str, **params):
    return find(REGISTRY, strategy).space.canonical(params)


def test_defaults_fill_in_and_the_hash_is_stable() -> None:
    params = canonical("als", factors=32)
    assert params == {"factors": 32, "regularization": 0.05, "alpha": 2.0, "iterations": 15}
    assert Configuration("als", params).hash == Configuration("als", dict(reversed(list(params.items())))).hash
    assert Configuration("als", params).hash != Configuration("als", canonical("als")).hash
    # The hash is stored with every arm: it must never change for the same configuration.
    assert Configuration("als", params).hash == "9619f9861166a88d"


@pytest.mark.parametrize(
    ("strategy", "params", "message"),
    [
        ("als", {"factors": 4}, "configuration.params['factors']: must be between 8 and 512, got 4"),
        ("als", {"factors": 8.5}, "configuration.params['factors']: must be an integer, got 8.5"),
        ("als", {"alpha": "high"}, "configuration.params['alpha']: must be a number (float), got str"),
        ("als", {"alpha": True}, "configuration.params['alpha']: must be a number (float), got bool"),
        (
            "item_knn",
            {"k": 5},
            "configuration.params['k']: is not a hyperparameter of 'item_knn' (known: neighbours, shrinkage)",
        ),
    ],
)
def test_bad_hyperparameters_name_the_field_and_rule(strategy: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        canonical(strategy, **params)
    assert error.value.message == message


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(InvalidArgument) as error:
        find(REGISTRY, "deep")
    assert (
        error.value.message
        == "configuration.strategy: unknown strategy 'deep'; known: als, blend, ease, hybrid, item_knn, popularity"
    )


def test_the_configuration_schema_accepts_canonical_configurations_and_refuses_bad_ones() -> None:
    schema = configuration_schema([s.space for s in REGISTRY.values()])
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name, strategy in REGISTRY.items():
        validator.validate({"strategy": name, "params": strategy.space.canonical({})})
    assert not validator.is_valid({"strategy": "als", "params": {"factors": 4}})
    assert not validator.is_valid({"strategy": "als", "params": {"unknown": 1}})
    assert json.loads(json.dumps(schema)) == schema


def test_top_k_is_exact_ordered_and_skips_excluded() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.7])
    assert top_k(scores, 3).tolist() == [1, 3, 4]
    assert top_k(scores, 3, [1]).tolist() == [3, 4, 2]
    assert top_k(scores, 10, [0, 1]).tolist() == [3, 4, 2]


def test_ranking_metrics_by_hand() -> None:
    # Relevant {7, 9}; list [7, 1, 9]: hits at ranks 1 and 3.
    ndcg, recall, hit = ranking_metrics(np.array([7, 1, 9]), {7, 9}, k=3)
    assert ndcg == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert (recall, hit) == (1.0, 1.0)
    ndcg, recall, hit = ranking_metrics(np.array([1, 2, 9]), {7, 9, 8}, k=3)
    assert ndcg == pytest.approx((1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4)))
    assert recall == pytest.approx(1 / 3) and hit == 1.0
    assert ranking_metrics(np.array([1, 2]), {9}, k=2) == (0.0, 0.0, 0.0)


def test_time_split_holds_out_the_last_fifth_of_each_user() -> None:
    # user 0: 10 interactions at times 0..9 on items 0..9; user 1: 1 interaction; user 2: 3.
    users = np.array([0] * 10 + [1] + [2] * 3)
    items = np.array([*range(10), 3, 5, 6, 7])
    times = np.array([*range(10), 0, 30, 10, 20], dtype=float)
    data = TrainingData(tuple(map(str, range(10))), ("a", "b", "c"), users, items, np.ones(14), times)
    split = time_split(data, 0.2)
    assert split.held_out[0].tolist() == [8, 9]
    assert 1 not in split.held_out
    assert split.held_out[2].tolist() == [5]  # the newest of user 2 (time 30)
    assert len(split.train.users) == 14 - 3


def test_platt_scaling_recovers_a_logistic_relationship() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-(2.0 * scores - 1.0)))).astype(float)
    calibration = fit_platt(scores, labels)
    assert calibration.a == pytest.approx(2.0, abs=0.1)
    assert calibration.b == pytest.approx(-1.0, abs=0.1)


def test_loaders_name_the_file_and_line(tmp_path: Path) -> None:
    interactions = tmp_path / "interactions.csv"
    interactions.write_text("user_id,item_id,rating,timestamp\n1,2,4,100\n1,3,five,101\n")
    with pytest.raises(DatasetError) as error:
        load_interactions(interactions)
    assert str(error.value) == f"{interactions}:3: rating must be a number, got 'five'"
    interactions.write_text("user_id,item_id,rating,timestamp\n1,2,4\n")
    with pytest.raises(DatasetError, match=r":2: expected 4 columns \(user_id, item_id, rating, timestamp\), got 3$"):
        load_interactions(interactions)
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,genres\n1,Heat,Crime\n2,,Drama\n")
    with pytest.raises(DatasetError, match=r"items.csv:3: title must not be empty"):
        load_items(items)
    items.write_text("item_id,text\n1,A film about heat\n")
    assert [i.text for i in load_items(items)] == ["A film about heat"]


class StandInModel(FittedModel):
    """A stand-in fitted model with fixed scores, to check the evaluation code around models."""

    n_items = 3

    def scores(self, context) -> np.ndarray:
        return np.array([0.9, 0.5, 0.7])

    def nbytes(self) -> int:
        return 0


def test_evaluate_model_by_hand() -> None:
    from services.scoring.core.fitting import evaluate_model

    # user 0 trained on item 0, holds out item 1; user 1 trained on item 2, holds out item 0.
    train = TrainingData(("a", "b", "c"), ("u0", "u1"), np.array([0, 1]), np.array([0, 2]), np.ones(2), np.zeros(2))
    metrics = evaluate_model(StandInModel(), train, {0: np.array([1]), 1: np.array([0])}, k=2)
    # user 0 sees [2, 1]: hit at rank 2. user 1 sees [0, 1]: hit at rank 1.
    assert metrics.ndcg == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert (metrics.recall, metrics.hit_rate, metrics.users_evaluated) == (1.0, 1.0, 2)
    assert metrics.catalog_coverage == 1.0


def test_live_popularity_counted_increment_by_increment_equals_a_full_recount() -> None:
    live = ScoringData()
    live.upsert_items([Item(f"i{n}", f"item {n}") for n in range(6)])
    model = PopularityModel(live, half_life_seconds=2 * DAY, n_items=6)
    context = ScoringContext(History(np.array([]), np.array([]), np.array([])), None, 0.0)
    assert model.scores(context).tolist() == [0.0] * 6
    batches = [
        [Interaction("u1", "i1", 1.0, 10 * DAY), Interaction("u2", "i2", 1.0, 11 * DAY)],
        [Interaction("u3", "i1", 1.0, 9 * DAY)],  # older than the newest: decays relative to it
        [Interaction("u1", "i4", 1.0, 15 * DAY), Interaction("u2", "i1", 1.0, 15 * DAY)],  # a newer newest
        [],
    ]
    for batch in batches:
        before = model.scores(context)
        frozen = before.copy()
        if batch:
            live.add_interactions(batch)
        else:
            live.upsert_items([Item("i0", "renamed")])  # a new version without interactions
        after = model.scores(context)
        np.testing.assert_allclose(after, decayed_counts(live.snapshot(), 2 * DAY), rtol=1e-12)
        np.testing.assert_array_equal(before, frozen)  # an answer already given is never changed


def test_a_scoring_database_made_before_migrations_keeps_its_vectors(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'scoring.db'}")
    item_vectors.create(engine)  # what create_all made before migrations: item vectors only
    row = {"model": "m", "item_id": "1", "text_sha": "s", "dimension": 2, "vector": b"\0" * 8}
    with engine.begin() as connection:
        connection.execute(item_vectors.insert(), row)
    migrate(engine, SCHEMA)
    journal = DataJournal(engine)
    journal.record_interactions([Interaction("u", "1", 1.0, 0.0)])
    with engine.connect() as connection:
        assert [tuple(r) for r in connection.execute(item_vectors.select())] == [tuple(row.values())]
    engine.dispose()


def test_the_journal_cursor_waits_for_a_missing_id_then_skips_it() -> None:
    cursor = _Cursor()
    cursor.applied.update({1, 2, 4, 5})  # 3 not visible yet: committed later, or rolled back
    cursor.settle(now=100.0)
    assert (cursor.settled, cursor.applied) == (2, {4, 5})
    cursor.settle(now=100.0 + GAP_SECONDS - 1)
    assert cursor.settled == 2  # still waiting for 3
    cursor.applied.add(3)  # it committed after all
    cursor.settle(now=100.0 + GAP_SECONDS - 1)
    assert (cursor.settled, cursor.applied) == (5, set())
    cursor.applied.update({7})
    cursor.settle(now=200.0)
    cursor.settle(now=200.0 + GAP_SECONDS)
    assert (cursor.settled, cursor.applied, cursor.missing_since) == (7, set(), {})  # 6 given up


def test_texts_go_to_the_encoder_in_requests_bounded_by_count_and_bytes() -> None:
    from services.scoring.core.vectors import EMBED_BATCH, EMBED_BATCH_BYTES, _batches

    big = [(f"i{n}", "sha", "x" * 16384) for n in range(200)]  # 3.2 MiB: over gRPC's 4 MiB with 256
    batches = list(_batches(big))
    assert sum(len(b) for b in batches) == 200
    assert all(sum(len(text) for _, _, text in b) <= EMBED_BATCH_BYTES for b in batches)
    small = [(f"i{n}", "sha", "short") for n in range(600)]
    assert [len(b) for b in _batches(small)] == [EMBED_BATCH, EMBED_BATCH, 600 - 2 * EMBED_BATCH]


def test_a_hyperparameter_added_later_keeps_stored_hashes_while_at_its_default() -> None:
    from services.scoring.core.service import ScoringCore

    core = ScoringCore(REGISTRY)
    # hybrid's hashes from before w_two_tower existed (stored with arms since then).
    assert core.configuration("hybrid", {}).hash == "4d87907b36681010"
    assert core.configuration("hybrid", {"w_content": 0.3}).hash == "f0f4882f9fef95cb"
    assert core.configuration("hybrid", {"w_two_tower": 0.0}).hash == "4d87907b36681010"
    assert core.configuration("hybrid", {"w_two_tower": 0.3}).hash != "4d87907b36681010"
    assert core.configuration("hybrid", {}).params["w_two_tower"] == 0.0  # still filled in for the fit


class StandInCalibratedStrategy(Strategy):
    """Stand-in (unit test of the calibration choice around a model): a model with a
    probability of its own that is calibrated by construction, sigmoid(score) = the chance
    that the item is the user's next one; scores from a fixed table."""

    space = StrategySpace("stand_in", "calibrated by construction", ())

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def fit(self, data, params, live):
        logits = self.logits

        class Model(FittedModel):
            native_probability = True
            n_items = len(logits)

            def scores(self, context):
                return logits.copy()

            def nbytes(self) -> int:
                return 0

        return Model()


def test_the_model_s_own_probability_is_kept_when_it_calibrates_better_than_platt() -> None:
    from services.scoring.core.service import ScoringCore

    # Each user's newest item (the calibration positive) is item 0; the other items are
    # negatives. A logit of 10 for item 0 and -10 elsewhere is calibrated: Platt scaling,
    # fitted out of fold, can only tie it.
    logits = np.array([10.0] + [-10.0] * 39)
    core = ScoringCore({"stand_in": StandInCalibratedStrategy(logits)})
    core.data.upsert_items([Item(str(i), f"item {i}") for i in range(40)])
    core.data.add_interactions(
        [
            Interaction(f"u{u}", str(item), 1.0, 1_000_000.0 + rank)
            for u in range(30)
            for rank, item in enumerate((5, 0))
        ]
    )
    configuration = core.configuration("stand_in", {})
    status = core.fit(configuration, wait=True)
    assert status.calibration_report.method == "model", status
    assert status.calibration_report.ece <= status.calibration_report.alternative_ece
    scored = core.score_items(configuration, "u1", [], ["0", "7"])
    assert [s.probability for s in scored] == pytest.approx(list(1.0 / (1.0 + np.exp(-logits[[0, 7]]))), rel=1e-12)


def test_interactions_are_kept_in_compact_columns_that_grow_without_losing_rows() -> None:
    data = ScoringData()
    data.upsert_items([Item(str(i), f"item {i}") for i in range(50)])
    rows = [Interaction(f"u{n % 7}", str(n % 50), float(n % 5), 1_000_000.0 + n) for n in range(3000)]
    for start in range(0, len(rows), 700):  # appends that cross the buffer's doublings
        data.add_interactions(rows[start : start + 700])
    snapshot = data.snapshot()
    assert snapshot.items.tolist() == [n % 50 for n in range(3000)]
    assert snapshot.values.tolist() == [float(n % 5) for n in range(3000)]
    assert snapshot.times.tolist() == [1_000_000.0 + n for n in range(3000)]
    history = data.history("u3")
    assert history.items.tolist() == [n % 50 for n in range(3000) if n % 7 == 3]
    items, _, end = data.interactions_since(2990)
    assert (items.tolist(), end) == ([n % 50 for n in range(2990, 3000)], 3000)
    # 4 columns of 8 bytes with their spare capacity, and the per-user row lists (a Python
    # int each): well below the ~170 bytes a row of Python objects in lists took.
    assert data.interaction_bytes() / data.n_interactions < 100


class ComponentStandIn:
    """Stands in for a hybrid's fitted component: only MMR, which reads none of it, runs."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items


def test_hybrid_diversifies_a_large_list_without_a_pool_by_pool_matrix() -> None:
    """MMR over k = 1,000 (a pool of 5,000) keeps one row of similarities per chosen item:
    the same list as the pool x pool matrix gives (computed here as the reference)."""
    from services.scoring.core.strategies.hybrid import HybridModel, normalised

    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((6000, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = rng.random(6000)
    model = HybridModel([(1.0, ComponentStandIn(6000))], vectors, mmr_lambda=0.7, epsilon=0.0)  # type: ignore[list-item]
    pool = top_k(scores, 5000)
    chosen = model._mmr(scores, pool, 1000)
    similarity = vectors[pool] @ vectors[pool].T
    relevance, closest = normalised(scores[pool]), np.full(len(pool), -np.inf)
    expected: list[int] = []
    for _ in range(1000):
        value = 0.7 * relevance - 0.3 * np.where(np.isfinite(closest), closest, 0.0)
        value[expected] = -np.inf
        expected.append(int(np.argmax(value)))
        closest = np.maximum(closest, similarity[expected[-1]])
    assert chosen == [int(pool[i]) for i in expected]


def test_a_long_history_is_kept_read_only_and_extended_when_the_user_adds_to_it() -> None:
    from services.scoring.core.data import LONG_HISTORY_ROWS, ScoringData

    data = ScoringData()
    data.upsert_items([Item(str(i), f"item {i}") for i in range(50)])
    data.add_interactions([Interaction("heavy", str(n % 50), 1.0, 1_000_000.0 + n) for n in range(LONG_HISTORY_ROWS)])
    data.add_interactions([Interaction("light", "1", 1.0, 2_000_000.0)])
    first = data.history("heavy")
    assert data.history("heavy") is first and not first.items.flags.writeable
    assert data.history("light") is not data.history("light")  # short ones are gathered each time
    data.add_interactions([Interaction("heavy", "7", 1.0, 500_000.0)])  # older than the rest: sorted in
    changed = data.history("heavy")
    assert changed is not first and len(changed.items) == LONG_HISTORY_ROWS + 1
    assert changed.items[0] == 7 and bool(np.all(np.diff(changed.times) >= 0))
    data._long_histories.clear()  # gathered again from the columns: the same history
    gathered = data.history("heavy")
    for column in ("items", "values", "times"):
        assert np.array_equal(getattr(gathered, column), getattr(changed, column))
