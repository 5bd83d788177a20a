"""The simulated users and the click model of the demo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from demo.simulation import ClickModel, MovingWorld, SimulatedUsers, clicks
from rectune.domain.events import Interaction


def test_each_user_is_split_by_time_and_the_later_part_is_the_truth() -> None:
    rows = [Interaction("u1", str(i), float(i % 5 + 1), float(100 - i)) for i in range(10)]
    rows.append(Interaction("u2", "x", 5.0, 1.0))
    users = SimulatedUsers.split(rows, holdout_fraction=0.2)
    assert users.truth["u1"] == {"1": 2.0, "0": 1.0}  # the two newest (times 99 and 100)
    assert users.truth["u2"] == {}  # a single interaction stays in training
    assert len(users.train) == 9
    assert users.weights.tolist() == pytest.approx([10 / 11, 1 / 11])


def test_click_probability_is_position_bias_times_interest() -> None:
    model = ClickModel(liked=0.5, disliked=0.1, base=0.01)
    assert model.examination(1) == 1.0 and model.examination(3) == pytest.approx(1 / math.log2(4))
    assert (model.interest(5.0), model.interest(2.0), model.interest(None)) == (0.5, 0.1, 0.01)


def test_common_random_numbers_make_two_lists_comparable() -> None:
    model = ClickModel()
    truth = {"a": 5.0, "b": 1.0}
    uniforms, noise = np.array([0.4, 0.05, 0.9]), np.ones(3)
    # "a" at rank 1: 0.4 < 1.0 * 0.5 -> click; "b" at rank 2: 0.05 < 0.63 * 0.1 -> click.
    assert clicks(model, truth, ["a", "b", "c"], uniforms, noise) == [True, True, False]
    # The same draws on another list: "c" (not rated later) at rank 1 is not clicked.
    assert clicks(model, truth, ["c", "a", "b"], uniforms, noise) == [False, True, False]


def test_the_moving_world_releases_items_in_the_order_first_seen_and_unfolds_the_timeline() -> None:
    rows = [
        Interaction("a", "i1", 5.0, 1.0),
        Interaction("b", "i2", 4.0, 2.0),
        Interaction("a", "i3", 3.0, 3.0),  # the cut is here: i3 is released during the run
        Interaction("b", "i1", 2.0, 4.0),
        Interaction("c", "i4", 5.0, 5.0),
        Interaction("a", "i4", 4.0, 6.0),
    ]
    world = MovingWorld.of(list(reversed(rows)), {"i1": "one"}, start_share=0.34)
    assert world.initial == rows[:2] and world.initial_items == {"i1", "i2"}
    steps = world.releases(2)
    assert [(s.items, s.interactions, s.asker) for s in steps] == [
        (["i3"], [rows[2]], rows[3]),  # i3 released, a's interaction arrives, then b asks
        (["i4"], [rows[4]], rows[5]),
    ]
    # b asks at time 4: what b rated from then on is what b would like now.
    assert world.interest("b", steps[0].asker.time) == {"i1": 2.0}
    assert world.interest("a", 6.0) == {"i4": 4.0} and world.interest("a", 7.0) == {}
    assert sum(len(s.interactions) + 1 for s in steps) == len(world.timeline)  # nothing lost, nothing twice
