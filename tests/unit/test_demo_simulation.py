"""The simulated users and the click model of the demo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from demo.simulation import ClickModel, SimulatedUsers, clicks
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
