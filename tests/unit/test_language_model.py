"""The language-model proposer with the real SmolLM2-135M-Instruct, and the code around it."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from rectune.domain.arms import ArmOrigin
from rectune.domain.configuration import Configuration
from rectune.domain.space import Hyperparameter, ParamType, SearchSpace, StrategySpace
from tests.unit.test_tuner import SPACE, number
from tuner import language_model as language_model_module
from tuner.language_model import LanguageModel
from tuner.lm_proposer import LanguageModelProposer, candidate_values, describe
from tuner.pool_proposer import PoolProposer, prompt
from tuner.proposers import Briefing, Observation
from tuner.space import narrowed

FLOAT, INT = ParamType.FLOAT, ParamType.INT


def test_the_model_prefers_the_obvious_continuation(language_model) -> None:
    context = language_model.start("You answer in one word.", "What is the capital of France?")
    paris, banana = language_model.probabilities(context, ["Paris", "Banana"])
    assert paris > 0.99 and paris + banana == pytest.approx(1.0)


def test_scoring_options_leaves_the_context_as_it_was(language_model) -> None:
    context = language_model.start("You answer in one word.", "Name a colour.")
    first = language_model.probabilities(context, ["red", "blue", "a shade of green"])
    second = language_model.probabilities(context, ["red", "blue", "a shade of green"])
    assert first == pytest.approx(second, abs=1e-6)
    assert context.cache.get_seq_length() == context.length
    chosen = language_model.choose(context, ["red", "blue", "a shade of green"], 0.0, random.Random(0))
    assert chosen == max(range(3), key=first.__getitem__)
    assert context.text == ["red", "blue", "a shade of green"][chosen]
    assert context.cache.get_seq_length() == context.length


def test_the_dequantised_weights_are_reused(language_model, lm_cache_dir, monkeypatch) -> None:
    def no_gguf():
        raise AssertionError("the GGUF file was read again")

    monkeypatch.setattr(language_model_module, "packaged_gguf", no_gguf)
    again = LanguageModel("", lm_cache_dir)
    context = again.start("You answer in one word.", "What is the capital of France?")
    assert again.probabilities(context, ["Paris", "Banana"])[0] > 0.99


def test_proposals_are_valid_new_configurations_with_a_rationale(language_model) -> None:
    space = narrowed(SPACE, {"strategies": {"als": {"factors": {"low": 16, "high": 64}}, "hybrid": {}}})
    history = [Observation(Configuration("als", {"factors": 16, "regularization": 0.05}), 0.2)]
    # The model likes to copy the best screen: taken (as the controller passes it) holds it.
    taken = {Configuration("hybrid", {"mode": "a", "explore": False}).key(), history[0].configuration.key()}
    proposer = LanguageModelProposer(language_model, seed=3, rationale_tokens=40)
    proposals = proposer.propose(space, 3, taken, history)
    assert len(proposals) == 3 and len({p.configuration.key() for p in proposals}) == 3
    for proposal in proposals:
        assert proposal.origin is ArmOrigin.TUNER_LM and proposal.configuration.key() not in taken
        evidence, words = proposal.rationale.split("; the model's words: ")
        assert evidence == (
            "SmolLM2-135M-Instruct wrote it among the values the space allows, shown the 1 best of 1 screened "
            "configurations (best NDCG 0.2000)"
        )
        assert len(words) > 10
        params = proposal.configuration.params
        if proposal.configuration.strategy == "als":
            assert 16 <= number(params["factors"]) <= 64 and 1e-4 <= number(params["regularization"]) <= 10
        else:
            assert params["mode"] in ("a", "b", "c") and isinstance(params["explore"], bool)


def test_the_same_seed_gives_the_same_proposals(language_model) -> None:
    def propose(seed: int) -> list[str]:
        proposer = LanguageModelProposer(language_model, seed=seed, rationale_tokens=0)
        return [p.configuration.key() for p in proposer.propose(SPACE, 2, set(), [])]

    first = propose(5)
    assert first == propose(5)
    # Sampling at temperature: another seed draws other values somewhere among three seeds.
    assert any(propose(seed) != first for seed in (6, 7, 8))


def test_numeric_candidates_span_the_range_and_include_the_best_value() -> None:
    factors = Hyperparameter("factors", INT, 64, "", 8, 512, log_scale=True)
    values = candidate_values(factors, 100)
    assert values[0] == 8 and values[-1] == 512 and 100 in values
    assert all(isinstance(v, int) for v in values) and len(values) == len(set(values)) == 8
    ratios = [number(b) / number(a) for a, b in itertools.pairwise(values) if 100 not in (a, b)]
    assert all(math.isclose(r, 2.0, rel_tol=0.05) for r in ratios)  # log-spaced: 8, 16, ..., 512
    shrinkage = Hyperparameter("shrinkage", FLOAT, 10.0, "", 0.0, 1000.0)
    assert candidate_values(shrinkage, 5000.0) == [0.0, 167.0, 333.0, 500.0, 667.0, 833.0, 1000.0]
    assert (
        json.dumps(candidate_values(Hyperparameter("r", FLOAT, 0.05, "", 1e-4, 10.0, log_scale=True), None)[0])
        == "0.0001"
    )


def test_the_prompt_shows_the_space_and_the_best_screens_first() -> None:
    history = [
        Observation(Configuration("hybrid", {"mode": "b", "explore": False}), 0.1),
        Observation(Configuration("als", {"factors": 16, "regularization": 0.0512345}), 0.2),
    ]
    prompt = describe(SPACE, history)
    assert "- als: factors (integer from 8 to 512, log scale); regularization (number from 0.0001 to 10" in prompt
    assert "- hybrid: mode (one of a, b, c); explore (true or false)" in prompt
    lines = prompt.splitlines()
    best = lines.index('{"strategy": "als", "params": {"factors": 16, "regularization": 0.0512}} scored 0.2000')
    assert lines[best + 1].startswith('{"strategy": "hybrid"')


def test_the_model_is_steered_to_the_configurations_left_and_stops_when_none_is(language_model) -> None:
    hybrid = narrowed(SPACE, {"strategies": {"hybrid": {}}})  # 3 modes x 2 = 6 configurations
    every = [Configuration("hybrid", {"mode": m, "explore": e}).key() for m in "abc" for e in (False, True)]
    proposer = LanguageModelProposer(language_model, seed=1, rationale_tokens=0)
    (last,) = proposer.propose(hybrid, 3, set(every[1:]), [])
    assert last.configuration.key() == every[0]
    assert proposer.propose(hybrid, 2, set(every), []) == []


def test_prompts_sharing_a_beginning_are_scored_as_if_alone(language_model) -> None:
    users = ["Pick a colour. Candidates: A red, B blue.", "Pick a colour. Candidates: A blue, B red."]
    together = language_model.probabilities_each("Answer with one letter.", users, ["A", "B"])
    for user, shared in zip(users, together, strict=True):
        alone = language_model.probabilities(language_model.start("Answer with one letter.", user), ["A", "B"])
        assert shared == pytest.approx(alone, abs=1e-4)


def test_a_prompt_reuses_the_beginning_it_shares_with_the_last_and_scores_as_if_read_alone(
    language_model, lm_cache_dir
) -> None:
    system = "Answer with one letter."
    first = "Scores so far: red 0.2, blue 0.1. Candidates: A red, B blue."
    second = "Scores so far: red 0.2, blue 0.1, green 0.3. Candidates: A green, B blue."
    language_model.probabilities_each(system, [first], ["A", "B"])
    fed: list[int] = []
    feed = language_model._feed

    def counted_feed(context, ids):
        fed.append(len(ids))
        feed(context, ids)

    language_model._feed = counted_feed
    try:
        (reused,) = language_model.probabilities_each(system, [second], ["A", "B"])
        started = language_model.probabilities(language_model.start(system, second), ["A", "B"])
    finally:
        del language_model._feed
    fresh = LanguageModel("", lm_cache_dir)
    alone = fresh.probabilities(fresh.start(system, second), ["A", "B"])
    assert reused == pytest.approx(alone, abs=1e-4) and started == pytest.approx(alone, abs=1e-4)
    whole = len(fresh._ids(fresh._render([{"role": "system", "content": system}, {"role": "user", "content": second}])))
    assert sum(fed) < whole  # only what follows the common beginning was read again


def test_the_pool_proposer_picks_from_tpe_and_says_why_with_numbers(language_model) -> None:
    history = [
        Observation(Configuration("als", {"factors": 32, "regularization": 0.1}), 0.15),
        Observation(Configuration("hybrid", {"mode": "b", "explore": False}), 0.12),
    ]
    proposer = PoolProposer(language_model, seed=2, pool_size=3)
    proposals = proposer.propose(SPACE, 2, set(), history, Briefing(data="943 users, 1682 items"))
    assert len(proposals) == 2 and len({p.configuration.key() for p in proposals}) == 2
    for proposal in proposals:
        assert proposal.origin is ArmOrigin.TUNER_LM
        # Evidence, not prose: what TPE was fitted to, each candidate with the model's
        # probability, and the choice, which is the proposal's own configuration.
        assert proposal.rationale.startswith("TPE fitted to 2 screened configurations, best NDCG 0.1500; pool of 3: ")
        assert proposal.rationale.count(" p=") == 3
        assert f"SmolLM2-135M-Instruct chose {proposal.configuration.strategy}(" in proposal.rationale


def test_the_pool_proposer_leaves_a_share_to_tpe(language_model) -> None:
    proposer = PoolProposer(language_model, seed=1, pool_size=2, share=0.0)
    (proposal,) = proposer.propose(SPACE, 1, set(), [])
    assert "TPE's own pick (the model chooses 0% of proposals)" in proposal.rationale


def test_the_pool_prompt_briefs_the_model_then_lists_the_candidates() -> None:
    space = SearchSpace(
        (
            StrategySpace(
                "als",
                "Matrix factorisation.",
                (Hyperparameter("factors", INT, 64, "latent dimensions", 8, 512, log_scale=True),),
            ),
        )
    )
    history = [
        Observation(Configuration("als", {"factors": 16}), 0.11),
        Observation(Configuration("als", {"factors": 64}), 0.13),
    ]
    serving = "champion-1 (champion): als, click rate 0.0400 over 900 impressions"
    briefing = Briefing("943 users, 1682 items", (serving,))
    text = prompt(space, history, briefing, [Configuration("als", {"factors": 200})], 10)
    assert text == "\n".join(
        [
            "Data: 943 users, 1682 items",
            "Serving now:",
            "- champion-1 (champion): als, click rate 0.0400 over 900 impressions",
            "Strategies and their hyperparameters:",
            "- als: factors (integer from 8 to 512, log scale)",
            "Tried so far, best first (NDCG@10, higher is better):",
            '{"strategy": "als", "params": {"factors": 64}} scored 0.1300',
            '{"strategy": "als", "params": {"factors": 16}} scored 0.1100',
            "Candidates:",
            'A: {"strategy": "als", "params": {"factors": 200}}',
            "Which candidate will score highest? Answer with one letter.",
        ]
    )
