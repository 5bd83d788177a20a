"""rectune.domain's rules, word for word and at their edges: the value checks every service
applies (events.py), the typed spaces (space.py), the data's shape, errors and arms. Expected
messages and numbers are written out here from the rules the docstrings state."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from rectune.domain.arms import Algorithm, decay, decayed_count
from rectune.domain.comparison import compare_paired, resampled_users
from rectune.domain.configuration import Configuration
from rectune.domain.data import DataShape
from rectune.domain.errors import (
    AlreadyExists,
    FieldError,
    InvalidArgument,
    NotFound,
    RectuneError,
    Relayed,
    quoted,
)
from rectune.domain.events import (
    MAX_CONTEXT_ENTRIES,
    MAX_CONTEXT_TEXT,
    MAX_FUTURE_SECONDS,
    MAX_ID_LENGTH,
    MAX_ITEM_TEXT_BYTES,
    MAX_ITEMS_PER_DECISION,
    MAX_VALUE,
    Decision,
    EventKind,
    FeedbackEvent,
    Interaction,
    Item,
    ScoredItem,
    TimeRules,
    check_context,
    check_decisions,
    check_events,
    check_id,
    check_interaction,
    check_item,
    check_time,
    check_value,
    edge_rules,
    listed,
    stored_value,
)
from rectune.domain.space import (
    Hyperparameter,
    ParamType,
    SearchSpace,
    SpaceError,
    StrategySpace,
    configuration_schema,
)

NOW = 1_700_000_000.0
RULES = TimeRules(NOW, 300.0)


def message(check, *args) -> str:
    with pytest.raises(InvalidArgument) as error:
        check(*args)
    return error.value.message


# -- the limits, as documented -----------------------------------------------------------------


def test_the_documented_limits() -> None:
    assert (MAX_ID_LENGTH, MAX_VALUE, MAX_ITEMS_PER_DECISION, MAX_FUTURE_SECONDS) == (128, 1e6, 1000, 300.0)
    assert (MAX_ITEM_TEXT_BYTES, MAX_CONTEXT_ENTRIES, MAX_CONTEXT_TEXT) == (16384, 64, 1024)
    assert EventKind.names() == ["impression", "click", "conversion", "rating", "custom"]


# -- ids, context, values, times ---------------------------------------------------------------


def test_an_id_is_required_unless_said_and_at_most_128_characters() -> None:
    check_id("user_id", "x" * 128)
    check_id("user_id", "", required=False)
    assert message(check_id, "user_id", "") == "user_id: must not be empty"
    assert message(check_id, "user_id", "x" * 129) == "user_id: at most 128 characters, got 129"
    assert message(check_id, "user_id", "x" * 129, False) == "user_id: at most 128 characters, got 129"


def test_a_context_is_bounded_in_entries_keys_and_values() -> None:
    check_context({f"k{n}": "v" * 1024 for n in range(64)})
    many = {f"k{n}": "" for n in range(65)}
    assert message(check_context, many) == "context: at most 64 entries, got 65"
    assert message(check_context, {"": "v"}, "item.attributes") == "item.attributes key: must not be empty"
    assert message(check_context, {"page": "v" * 1025}) == "context['page']: at most 1024 characters, got 1025"


def test_a_value_is_finite_and_within_a_million_either_way() -> None:
    for value in (1e6, -1e6, 0.0):
        check_value("value", value)
    assert message(check_value, "value", math.nan) == "value: must be a finite number, got nan"
    assert message(check_value, "value", -math.inf) == "value: must be a finite number, got -inf"
    assert message(check_value, "value", 1000000.5) == "value: must be between -1e+06 and 1e+06, got 1e+06"
    assert message(check_value, "value", -2e6) == "value: must be between -1e+06 and 1e+06, got -2e+06"


def test_a_time_is_after_1970_and_at_most_the_allowed_seconds_ahead() -> None:
    for time in (None, 0.0, NOW + 300.0):
        check_time("time", time, RULES)
    assert message(check_time, "time", math.inf, RULES) == "time: must be a finite time, got inf"
    assert message(check_time, "time", -0.5, RULES) == "time: must not be before 1970 (unix seconds), got -0"
    assert message(check_time, "time", NOW + 301.0, RULES) == ("time: is 301 s in the future; at most 300 s is allowed")
    compacted = TimeRules(NOW, 300.0, oldest_accepted=NOW - 10)
    check_time("time", NOW - 10, compacted)
    assert message(check_time, "time", NOW - 11, compacted) == (
        "time: is older than the retention horizon (already compacted into hourly aggregates)"
    )


def test_the_edge_rules_are_now_and_the_documented_future() -> None:
    assert edge_rules(NOW) == TimeRules(NOW, 300.0, None)
    assert abs(edge_rules().now - __import__("time").time()) < 60


def test_an_items_text_is_at_most_16_kib_of_utf8_and_its_attributes_are_a_context() -> None:
    check_item("items[0]", Item("i", "é" * 8192))  # 16,384 bytes
    assert message(check_item, "items[0]", Item("i", "é" * 8192 + "x")) == (
        "items[0].text: at most 16384 bytes of UTF-8, got 16385"
    )
    assert message(check_item, "items[0]", Item("", "t")) == "items[0].item_id: must not be empty"
    assert message(check_item, "items[0]", Item("i", "t", {"k": "v" * 1025})) == (
        "items[0].attributes['k']: at most 1024 characters, got 1025"
    )


def test_an_interaction_names_the_field_that_fails() -> None:
    check_interaction("h[0]", Interaction("", "i", 1.0, 0.0), RULES, user_required=False)
    assert (
        message(check_interaction, "h[0]", Interaction("", "i", 1.0, 0.0), RULES) == "h[0].user_id: must not be empty"
    )
    assert (
        message(check_interaction, "h[0]", Interaction("u", "", 1.0, 0.0), RULES) == "h[0].item_id: must not be empty"
    )
    assert message(check_interaction, "h[0]", Interaction("u", "i", 2e6, 0.0), RULES) == (
        "h[0].value: must be between -1e+06 and 1e+06, got 2e+06"
    )
    assert message(check_interaction, "h[0]", Interaction("u", "i", 1.0, NOW + 1e4), RULES) == (
        "h[0].time: is 10000 s in the future; at most 300 s is allowed"
    )


def event(**changes) -> FeedbackEvent:
    base = FeedbackEvent("e", "d", "a", "", "", EventKind.CLICK, "", 1.0, NOW)
    return base._replace(**changes)


def test_events_name_the_index_and_field_and_the_first_error_wins() -> None:
    check_events([event(), event(kind=EventKind.CUSTOM, custom_name="share")], RULES)
    assert message(check_events, [], RULES) == "events: must not be empty"
    assert message(check_events, [], RULES, "stream") == "stream: must not be empty"
    cases = [
        (event(event_id=""), "events[1].event_id: must not be empty"),
        (event(decision_id=""), "events[1].decision_id: must not be empty"),
        (event(arm_id=""), "events[1].arm_id: must not be empty"),
        (event(user_id="u" * 129), "events[1].user_id: at most 128 characters, got 129"),
        (event(item_id="i" * 129), "events[1].item_id: at most 128 characters, got 129"),
        (event(kind=None), "events[1].kind: must be one of impression, click, conversion, rating, custom"),
        (event(kind=EventKind.CUSTOM), "events[1].custom_name: must not be empty"),
        (event(value=math.nan), "events[1].value: must be a finite number, got nan"),
        (event(time=-5.0), "events[1].time: must not be before 1970 (unix seconds), got -5"),
    ]
    for bad, expected in cases:
        assert message(check_events, [event(), bad, event(event_id="")], RULES) == expected


def test_an_event_left_at_zero_counts_one_occurrence_of_a_counted_kind_only() -> None:
    assert [stored_value(event(kind=kind, value=0.0)) for kind in EventKind] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert stored_value(event(kind=EventKind.CLICK, value=2.5)) == 2.5


def test_an_event_tells_scoring_what_the_user_likes_only_with_item_user_and_time() -> None:
    liked = event(user_id="u", item_id="i", value=0.0)
    assert liked.interaction() == Interaction("u", "i", 1.0, NOW)
    assert event(user_id="u", item_id="i", kind=EventKind.RATING, value=4.0).interaction() == Interaction(
        "u", "i", 4.0, NOW
    )
    for missing in (
        event(item_id="i"),
        event(user_id="u"),
        event(user_id="u", item_id="i", time=None),
        event(user_id="u", item_id="i", kind=EventKind.IMPRESSION),
        event(user_id="u", item_id="i", kind=EventKind.CUSTOM),
    ):
        assert missing.interaction() is None


def decision(**changes) -> Decision:
    fields = {
        "decision_id": "d",
        "request_id": "r",
        "user_id": "u",
        "arm_id": "a",
        "propensity": 1.0,
        "propensity_samples": 0,
        "items": listed(["x", "y"]),
        "degraded": False,
        "algorithm": "thompson",
        "context": {},
        "time": NOW,
    }
    return Decision(**{**fields, **changes})


def test_decisions_name_the_index_and_field() -> None:
    check_decisions([decision(), decision(request_id="", user_id="", time=None)], RULES)
    assert message(check_decisions, [], RULES) == "decisions: must not be empty"
    cases = [
        (decision(decision_id=""), "decisions[1].decision_id: must not be empty"),
        (decision(arm_id=""), "decisions[1].arm_id: must not be empty"),
        (decision(request_id="r" * 129), "decisions[1].request_id: at most 128 characters, got 129"),
        (decision(user_id="u" * 129), "decisions[1].user_id: at most 128 characters, got 129"),
        (decision(context={"": "v"}), "decisions[1].context key: must not be empty"),
        (decision(propensity=0.0), "decisions[1].propensity: must be in (0, 1], got 0.0"),
        (decision(propensity=1.5), "decisions[1].propensity: must be in (0, 1], got 1.5"),
        (decision(propensity_samples=-1), "decisions[1].propensity_samples: must be >= 0, got -1"),
        (decision(items=listed(["i"] * 1001)), "decisions[1].item_ids: at most 1000 items"),
        (decision(time=NOW + 400), "decisions[1].time: is 400 s in the future; at most 300 s is allowed"),
    ]
    for bad, expected in cases:
        assert message(check_decisions, [decision(), bad], RULES) == expected
    check_decisions([decision(items=listed(["i"] * 1000), propensity_samples=0)], RULES)


def test_a_decision_lists_its_items_in_rank_order_and_counts_one_impression() -> None:
    assert listed(["x", "y"]) == (ScoredItem("x", 0.0, 0.0, 1), ScoredItem("y", 0.0, 0.0, 2))
    assert decision().item_ids == ("x", "y")
    assert decision().impression() == FeedbackEvent(
        "d:impression", "d", "a", "u", "", EventKind.IMPRESSION, "", 1.0, NOW
    )


# -- errors -------------------------------------------------------------------------------------


def test_errors_carry_their_status_and_the_field_and_rule() -> None:
    error = InvalidArgument("k", "must be >= 1")
    assert (error.code, error.message, error.field, error.rule, str(error)) == (
        "INVALID_ARGUMENT",
        "k: must be >= 1",
        "k",
        "must be >= 1",
        "k: must be >= 1",
    )
    assert (NotFound("a", "b").code, AlreadyExists("a", "b").code, RectuneError("x").code) == (
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "INTERNAL",
    )
    assert isinstance(error, FieldError) and RectuneError("plain").message == "plain"
    relayed = Relayed("NOT_FOUND", "arm_id: no arm 'x'")
    assert (relayed.code, relayed.message) == ("NOT_FOUND", "arm_id: no arm 'x'")


def test_an_error_quotes_at_most_a_short_prefix() -> None:
    assert quoted("abc") == "'abc'"
    assert quoted("x" * 32) == repr("x" * 32)
    assert quoted("x" * 33) == repr("x" * 32 + "...")
    assert quoted("abcdef", limit=3) == "'abc...'"


# -- arms and comparisons -----------------------------------------------------------------------


def test_decay_and_decayed_counts() -> None:
    assert decay(0.5, 3) == 0.125 and decay(0.5, 0) == 1.0 and decay(0.5, -4) == 1.0
    assert decayed_count([1, 2, 4], 0.5) == 0.125 + 0.25 + 1.0
    assert [a.discounts for a in Algorithm] == [False, True, False, False]
    assert Algorithm.names() == ["thompson", "discounted_thompson", "ucb1", "epsilon_greedy"]


def test_resamples_are_seeded_draws_of_users_with_replacement() -> None:
    picks = resampled_users(7, resamples=5, seed=3)
    assert picks.shape == (5, 7) and picks.min() >= 0 and picks.max() <= 6
    assert (picks == resampled_users(7, resamples=5, seed=3)).all()
    assert not (picks == resampled_users(7, resamples=5, seed=4)).all()
    assert resampled_users(10).shape == (1000, 10)
    assert (resampled_users(10) == resampled_users(10, seed=0)).all()  # seed 0 by default
    assert set(resampled_users(2, resamples=50).ravel().tolist()) == {0, 1}  # every user can be drawn


def test_a_paired_comparison_of_nothing_and_its_interval() -> None:
    empty = compare_paired(np.zeros(0), np.zeros(0), ratio=0.9)
    assert (empty.ratio, empty.probability_clears, empty.mean_difference, empty.interval, empty.resamples) == (
        0.9,
        0.0,
        0.0,
        (0.0, 0.0),
        0,
    )
    baseline = np.linspace(0.0, 1.0, 400)
    candidate = baseline + np.where(np.arange(400) % 2 == 0, 0.1, -0.02)  # +0.04 on average
    result = compare_paired(candidate, baseline, resamples=2000, seed=1)
    assert result.mean_difference == pytest.approx(0.04)
    low, high = result.interval
    # Half the users gain 0.1 and half lose 0.02: the resampled mean's standard error is
    # 0.06 / sqrt(400) = 0.003, so the 95% interval is about 0.04 -+ 0.0059.
    assert low == pytest.approx(0.04 - 0.00588, abs=0.0012) and high == pytest.approx(0.04 + 0.00588, abs=0.0012)
    assert result.probability_clears == 1.0 and (result.resamples, result.ratio) == (2000, 1.0)
    # The interval is the 2.5th and 97.5th percentiles of the resampled mean differences.
    picks = resampled_users(400, 2000, 1)
    differences = candidate[picks].mean(axis=1) - baseline[picks].mean(axis=1)
    assert result.interval == tuple(np.percentile(differences, [2.5, 97.5]).tolist())
    # Seed 0 by default; another seed draws other users.
    noisy = baseline + np.random.default_rng(9).normal(0.0, 0.3, 400)
    assert compare_paired(noisy, baseline) == compare_paired(noisy, baseline, seed=0)
    assert compare_paired(noisy, baseline, seed=1).interval != compare_paired(noisy, baseline).interval
    # Clearing a bar of 1.1 x the baseline's mean (0.5): the candidate's 0.54 falls short.
    assert compare_paired(candidate, baseline, ratio=1.1).probability_clears < 0.01
    # At exactly the bar, it counts as clearing it (>=).
    assert compare_paired(baseline, baseline, ratio=1.0).probability_clears == 1.0


# -- the data's shape ---------------------------------------------------------------------------


def test_the_data_shape_counts_users_with_any_interaction() -> None:
    shape = DataShape.of([0, 3, 1, 4], items=10)
    assert shape == DataShape(3, 10, 8, 3.0, 4)
    assert shape.density == pytest.approx(8 / 30)
    assert shape.summary() == (
        "3 users, 10 items, 8 interactions (density 0.267); interactions per user: median 3, max 4"
    )
    assert DataShape.of([0, 0], items=5) == DataShape(0, 5, 0, 0.0, 0)
    assert DataShape(0, 5, 0, 0.0, 0).density == 0.0
    assert DataShape.of([2, 5], items=1).median_history == 3.5


# -- spaces -------------------------------------------------------------------------------------

FACTORS = Hyperparameter("factors", ParamType.INT, 64, "latent factors", 8, 512, log_scale=True)
REG = Hyperparameter("reg", ParamType.FLOAT, 0.05, "penalty", 1e-4, 10.0, log_scale=True)
MODE = Hyperparameter("mode", ParamType.CATEGORICAL, "a", "mode", choices=("a", "b"))
EXPLORE = Hyperparameter("explore", ParamType.BOOL, False, "explore")
LATER = Hyperparameter("later", ParamType.FLOAT, 0.0, "added later", 0.0, 1.0, added_later=True)
ALS = StrategySpace("als", "matrix factorisation", (FACTORS, REG, MODE, EXPLORE, LATER))


def test_a_hyperparameter_checks_type_and_range_word_for_word() -> None:
    assert FACTORS.check("f", 8) == 8 and FACTORS.check("f", 512.0) == 512 and isinstance(FACTORS.check("f", 9.0), int)
    assert REG.check("r", 1) == 1.0 and isinstance(REG.check("r", 1), float)
    cases = [
        (FACTORS, 7, "f: must be between 8 and 512, got 7"),
        (FACTORS, 513, "f: must be between 8 and 512, got 513"),
        (FACTORS, 8.5, "f: must be an integer, got 8.5"),
        (FACTORS, True, "f: must be a number (int), got bool"),
        (FACTORS, "8", "f: must be a number (int), got str"),
        (REG, math.nan, "f: must be between 0.0001 and 10, got nan"),
        (REG, 10.5, "f: must be between 0.0001 and 10, got 10.5"),
        (MODE, "c", "f: must be one of a, b, got 'c'"),
        (MODE, 3, "f: must be one of a, b, got 3"),
        (EXPLORE, 1, "f: must be a bool, got int"),
    ]
    for hyperparameter, value, expected in cases:
        assert message(hyperparameter.check, "f", value) == expected
    assert MODE.check("m", "b") == "b" and EXPLORE.check("e", True) is True
    assert FACTORS.contains(64) and not FACTORS.contains(4) and not MODE.contains(None)


def test_json_schemas_of_values_strategies_and_configurations() -> None:
    assert FACTORS.json_schema() == {
        "description": "latent factors",
        "default": 64,
        "type": "integer",
        "minimum": 8,
        "maximum": 512,
        "x-log-scale": True,
    }
    assert MODE.json_schema() == {"description": "mode", "default": "a", "type": "string", "enum": ["a", "b"]}
    assert EXPLORE.value_schema() == {"type": "boolean"}
    assert REG.value_schema() == {"type": "number", "minimum": 1e-4, "maximum": 10.0}
    schema = ALS.json_schema()
    assert (schema["title"], schema["description"], schema["type"], schema["additionalProperties"]) == (
        "als hyperparameters",
        "matrix factorisation",
        "object",
        False,
    )
    assert list(schema["properties"]) == ["factors", "reg", "mode", "explore", "later"]
    strict = SearchSpace((ALS,)).json_schema({"why": {"type": "string"}})
    (branch,) = strict["oneOf"]
    assert branch["required"] == ["strategy", "params", "why"] and branch["additionalProperties"] is False
    assert branch["properties"]["params"]["required"] == ["factors", "reg", "mode", "explore", "later"]
    assert branch["properties"]["strategy"] == {"const": "als"}


def test_canonical_parameters_fill_defaults_and_name_unknown_ones() -> None:
    assert ALS.canonical({"factors": 16.0}) == {
        "factors": 16,
        "reg": 0.05,
        "mode": "a",
        "explore": False,
        "later": 0.0,
    }
    assert message(ALS.canonical, {"k": 1}) == (
        "configuration.params['k']: is not a hyperparameter of 'als' (known: factors, reg, mode, explore, later)"
    )
    assert message(StrategySpace("pop").canonical, {"k": 1}) == (
        "configuration.params['k']: is not a hyperparameter of 'pop' (known: none)"
    )
    assert message(ALS.canonical, {"factors": 1}, "p") == "p['factors']: must be between 8 and 512, got 1"
    assert ALS.hash_exempt(ALS.canonical({})) == ("later",)
    assert ALS.hash_exempt(ALS.canonical({"later": 0.5})) == ()


def test_parsing_an_answer_checks_it_against_the_space() -> None:
    space = SearchSpace((ALS, StrategySpace("pop")))
    assert space.names() == ["als", "pop"]
    parsed = space.parse({"strategy": "als", "params": {"factors": 32.0, "mode": "b"}})
    assert parsed == Configuration("als", {"factors": 32, "reg": 0.05, "mode": "b", "explore": False, "later": 0.0})
    assert isinstance(parsed.params["factors"], int)
    for answer, expected in [
        ([], "answer: must be an object with 'strategy' and 'params'"),
        ({"strategy": "als"}, "answer: must be an object with 'strategy' and 'params'"),
        ({"strategy": "knn", "params": {}}, "answer.strategy: must be one of als, pop, got 'knn'"),
        (
            {"strategy": "als", "params": {"factors": 4}},
            "answer.params.factors: 4 is outside {'type': 'integer', 'minimum': 8, 'maximum': 512}",
        ),
        ({"strategy": "pop", "params": {"z": 1, "a": 2}}, "answer.params: a, z not hyperparameters of pop"),
    ]:
        with pytest.raises(SpaceError) as error:
            space.parse(answer)
        assert str(error.value) == expected


def test_sampling_stays_in_range_log_uniformly_and_covers_the_choices() -> None:
    rng = random.Random(1)
    factors = [FACTORS.sample(rng) for _ in range(2000)]
    assert all(isinstance(f, int) and 8 <= f <= 512 for f in factors)
    below_64 = sum(float(f) < 64 for f in factors) / len(factors)  # log-uniform: half below the geometric middle
    assert below_64 == pytest.approx(0.5, abs=0.05)
    flat = Hyperparameter("w", ParamType.FLOAT, 0.5, "", 0.0, 1.0)
    values = [float(flat.sample(rng)) for _ in range(2000)]
    assert min(values) >= 0.0 and max(values) <= 1.0
    assert sum(v < 0.5 for v in values) / 2000 == pytest.approx(0.5, abs=0.05)
    assert {MODE.sample(rng) for _ in range(50)} == {"a", "b"}
    flips = [EXPLORE.sample(rng) is True for _ in range(2000)]
    assert sum(flips) / 2000 == pytest.approx(0.5, abs=0.05)
    narrow = Hyperparameter("n", ParamType.INT, 2, "", 1.5, 2.5)
    assert {narrow.sample(rng) for _ in range(50)} == {2}
    sampled = SearchSpace((ALS,)).sample(rng)
    assert sampled.strategy == "als" and set(sampled.params) == {"factors", "reg", "mode", "explore", "later"}


def test_the_json_schemas_whole() -> None:
    small = StrategySpace("knn", "neighbours", (Hyperparameter("k", ParamType.INT, 5, "how many", 1, 50),))
    k_schema = {"description": "how many", "default": 5, "type": "integer", "minimum": 1, "maximum": 50}
    assert small.json_schema() == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "knn hyperparameters",
        "description": "neighbours",
        "type": "object",
        "properties": {"k": k_schema},
        "additionalProperties": False,
    }
    assert configuration_schema([small]) == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "rectune configuration",
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "strategy": {"const": "knn"},
                    "params": {
                        "title": "knn hyperparameters",
                        "description": "neighbours",
                        "type": "object",
                        "properties": {"k": k_schema},
                        "additionalProperties": False,
                    },
                },
                "required": ["strategy", "params"],
                "additionalProperties": False,
            }
        ],
    }
    assert SearchSpace((small,)).json_schema() == {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "strategy": {"const": "knn"},
                    "params": {
                        "type": "object",
                        "properties": {"k": {"type": "integer", "minimum": 1, "maximum": 50}},
                        "required": ["k"],
                        "additionalProperties": False,
                    },
                },
                "required": ["strategy", "params"],
                "additionalProperties": False,
            }
        ]
    }
    integer, number = FACTORS.value_schema(), REG.value_schema()
    assert isinstance(integer["minimum"], int) and isinstance(integer["maximum"], int)
    assert isinstance(number["minimum"], float) and isinstance(number["maximum"], float)


def test_a_flat_range_samples_uniformly_and_a_log_range_from_zero_does_too() -> None:
    rng = random.Random(3)
    flat = Hyperparameter("n", ParamType.FLOAT, 50.0, "", 1.0, 100.0)
    values = [float(flat.sample(rng)) for _ in range(4000)]
    assert sum(values) / len(values) == pytest.approx(50.5, abs=2.0)  # log-uniform would give about 21.5
    from_zero = Hyperparameter("w", ParamType.FLOAT, 0.5, "", 0.0, 1.0, log_scale=True)
    zeros = [float(from_zero.sample(rng)) for _ in range(4000)]
    assert sum(zeros) / len(zeros) == pytest.approx(0.5, abs=0.03)
