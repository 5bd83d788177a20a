"""two_tower's fine-tuned encoder top (encoder_top.py) against the real packaged encoder:
before training its vectors are EmbeddingService's; a step moves the top layer only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rectune.domain.errors import FailedPrecondition
from services.common.encoder_model import DEFAULT_MODEL_NAME, packaged_model_dir
from services.embedding.core.encoder import Encoder, EncoderConfig
from services.scoring.core.strategies.encoder_top import EncoderTop, EncoderTraining, PrefixCache, frozen_prefix

TEXTS = [
    "Toy Story (1995) Animation Children's Comedy",
    "GoldenEye (1995) Action Adventure Thriller",
    "Four Rooms (1995) Thriller",
    "Get Shorty (1995) Action Comedy Drama",
    "Copycat (1995) Crime Drama Thriller",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(EncoderConfig())


@pytest.mark.parametrize("layers", [1, 2, 6])
def test_before_training_the_vectors_are_the_encoders_own(encoder: Encoder, layers: int) -> None:
    top = EncoderTop(frozen_prefix(str(packaged_model_dir()), TEXTS, layers), len(TEXTS))
    np.testing.assert_allclose(top.vectors().numpy(), encoder.encode(TEXTS), atol=2e-5)


def test_a_step_moves_the_trained_layers_and_leaves_the_frozen_part_and_the_cache_alone() -> None:
    prefix = frozen_prefix(str(packaged_model_dir()), TEXTS, 1)
    hidden_before = [chunk.hidden.clone() for chunk in prefix.chunks]
    loaded = {name: value.clone() for name, value in prefix.top.state_dict().items()}
    top = EncoderTop(prefix, len(TEXTS))
    training = EncoderTraining(top, learning_rate=1e-3, weight_decay=0.0)
    start = top.vectors()
    text = training.begin_epoch(start)
    # A loss that pulls the first two items together: its gradient reaches the top layer.
    loss = -(text[0] * text[1]).sum()
    loss.backward()  # type: ignore[no-untyped-call]
    after = training.end_epoch(text, steps=1)
    assert float((after[0] * after[1]).sum()) > float((start[0] * start[1]).sum())
    changed = [name for name, value in top.layers.state_dict().items() if not torch.equal(value, loaded[name])]
    assert changed  # the trained layer moved
    assert all(torch.equal(value, loaded[name]) for name, value in prefix.top.state_dict().items())
    assert all(torch.equal(c.hidden, h) for c, h in zip(prefix.chunks, hidden_before, strict=True))
    assert top.trained_parameters() == 1_774_464


def test_more_layers_than_the_encoder_has_are_refused() -> None:
    with pytest.raises(FailedPrecondition) as error:
        frozen_prefix(str(packaged_model_dir()), TEXTS, 7)
    assert str(error.value) == "configuration.params['finetune_layers']: the encoder has 6 layers, got 7"


def test_the_frozen_output_is_reused_for_the_same_texts_and_depth() -> None:
    cache = PrefixCache(kept=1)
    first, hit = cache.get(DEFAULT_MODEL_NAME, TEXTS, 1)
    assert not hit
    again, hit = cache.get(DEFAULT_MODEL_NAME, TEXTS, 1)
    assert hit and again is first
    _, hit = cache.get(DEFAULT_MODEL_NAME, TEXTS[:4], 1)  # other texts: computed, and it evicts the first
    assert not hit
    _, hit = cache.get(DEFAULT_MODEL_NAME, TEXTS, 1)
    assert not hit and cache.hits == 1
