"""LeanBert against transformers' own BertModel: the same hidden states from the same weights."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, DistilBertConfig, DistilBertModel

from rectune.datasets import item_texts
from services.embedding.core.encoder import Encoder, EncoderConfig, packaged_model_dir
from services.embedding.core.lean_bert import LeanBert, unsupported_reason

# A BertModel of the real class with random weights, small enough to build in a test.
TINY: dict[str, Any] = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
RELATIVE_POSITIONS: dict[str, Any] = {"position_embedding_type": "relative_key"}


def both_hidden_states(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        expected = model(**batch).last_hidden_state
    return expected, LeanBert(model)(batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"])


def test_the_packaged_model_gives_bertmodels_hidden_states_at_every_real_token() -> None:
    source = packaged_model_dir()
    tokenizer, model = AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()
    # Catalogue texts of many lengths, one word alone, and one cut at max_length: lots of padding.
    texts = [*item_texts()[:64], "a", "a much longer text about films " * 40]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    expected, lean = both_hidden_states(model, batch)
    real = batch["attention_mask"].bool()  # padded positions are never read (pooling masks them)
    assert lean.shape == expected.shape
    assert (lean[real] - expected[real]).abs().max().item() < 1e-4


def test_sentence_pairs_keep_their_token_types() -> None:
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=100, **TINY), add_pooling_layer=False).eval()  # type: ignore[no-untyped-call]
    input_ids = torch.randint(1, 100, (3, 9))
    token_type_ids = torch.tensor([[0] * 4 + [1] * 5] * 3)
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    expected, lean = both_hidden_states(model, batch)
    real = attention_mask.bool()
    assert (lean[real] - expected[real]).abs().max().item() < 1e-5
    without_types = LeanBert(model)(input_ids, None, attention_mask)
    assert not torch.allclose(without_types[real], lean[real])  # the types count


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"position_embedding_type": "relative_key"}, "positions are not absolute"),
        ({"hidden_act": "relu"}, "the activation is not gelu"),
    ],
)
def test_a_bert_the_lean_path_does_not_cover_is_refused_naming_why(changes: dict[str, Any], reason: str) -> None:
    model = BertModel(BertConfig(vocab_size=100, **TINY, **changes))
    assert unsupported_reason(model) == reason
    with pytest.raises(ValueError, match=f"the lean BERT path does not apply: {reason}"):
        LeanBert(model)


def test_another_architecture_is_not_taken_for_bert() -> None:
    model = DistilBertModel(DistilBertConfig(vocab_size=100, dim=64, n_layers=1, n_heads=4, hidden_dim=128))
    assert unsupported_reason(model) == "the model is DistilBertModel, not BertModel"


def test_the_encoder_takes_the_lean_path_for_bert_and_transformers_for_the_rest(tmp_path) -> None:
    assert Encoder(EncoderConfig()).forward_path == "lean-bert"
    # A local model directory the lean path does not cover: the packaged tokenizer and a
    # BERT with relative positions.
    AutoTokenizer.from_pretrained(packaged_model_dir()).save_pretrained(tmp_path)
    BertModel(BertConfig(**TINY, **RELATIVE_POSITIONS)).save_pretrained(tmp_path)
    encoder = Encoder(EncoderConfig(model=str(tmp_path)))
    assert encoder.forward_path == "transformers"
    vectors = encoder.encode(["Toy Story (1995)", "Heat (1995) | Action, Crime, Thriller"])
    assert vectors.shape == (2, 64)
    assert torch.allclose(torch.from_numpy(vectors).norm(dim=1), torch.ones(2), atol=1e-5)
