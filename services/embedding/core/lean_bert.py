"""LeanBert: a lean BERT forward pass for the CPU, the same arithmetic as transformers'.

transformers' BertModel spends a few milliseconds per forward pass in Python (mask
preparation, output bookkeeping, three projections where one would do). On two CPU cores
that is about a tenth of a forward pass of 8 short texts and a few percent of one of 32,
so it is what makes small batches (single-text clients) dearer per text than large ones.
This module runs the same layers from the model's own weights with a dozen torch calls
per layer: the query, key and value projections fused into one matrix product, the
attention through scaled_dot_product_attention with the padding mask, the feed-forward
and the layer norms as in BERT. Tests check it against BertModel's own output.

Only plain BERT qualifies (see ``unsupported_reason``); any other model runs through
transformers as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def unsupported_reason(model: Any) -> str | None:  # a transformers model (untyped)
    """Why this model cannot take the lean path, or None when it can."""
    if type(model).__name__ != "BertModel":
        return f"the model is {type(model).__name__}, not BertModel"
    config = model.config
    checks = (
        (getattr(config, "position_embedding_type", "absolute") == "absolute", "positions are not absolute"),
        (getattr(config, "hidden_act", None) == "gelu", "the activation is not gelu"),
        (not getattr(config, "is_decoder", False), "the model is a decoder"),
        (not getattr(config, "add_cross_attention", False), "the model has cross-attention"),
    )
    failed = [reason for ok, reason in checks if not ok]
    return "; ".join(failed) if failed else None


@dataclass(frozen=True)
class _Layer:
    qkv_weight: torch.Tensor  # query, key and value projections stacked: (3 * hidden, hidden)
    qkv_bias: torch.Tensor
    attention_out: nn.Linear
    attention_norm: nn.LayerNorm
    intermediate: nn.Linear
    output: nn.Linear
    output_norm: nn.LayerNorm


class LeanBert:
    """``last_hidden_state`` of a BertModel, computed from its weights (eval mode, no dropout)."""

    def __init__(self, model: Any) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the lean BERT path does not apply: {reason}")
        config = model.config
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.embeddings = model.embeddings
        self.layers = [_fuse(layer) for layer in model.encoder.layer]

    @torch.inference_mode()
    def __call__(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        batch, length = input_ids.shape
        hidden = self._embed(input_ids, token_type_ids, length).reshape(batch * length, self.hidden)
        # True where a key is a real token: padding takes no part in any token's attention.
        keys = attention_mask.bool().view(batch, 1, 1, length)
        for layer in self.layers:
            hidden = self._layer(layer, hidden, keys, batch, length)
        return hidden.view(batch, length, self.hidden)

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, length: int) -> torch.Tensor:
        embeddings = self.embeddings
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        summed = (
            embeddings.word_embeddings(input_ids)
            + embeddings.token_type_embeddings(token_type_ids)
            + embeddings.position_embeddings.weight[:length]
        )
        normalised: torch.Tensor = embeddings.LayerNorm(summed)
        return normalised

    def _layer(self, layer: _Layer, hidden: torch.Tensor, keys: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        head_size = self.hidden // self.heads
        qkv = F.linear(hidden, layer.qkv_weight, layer.qkv_bias)
        query, key, value = qkv.view(batch, length, 3, self.heads, head_size).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=keys)
        attended = attended.transpose(1, 2).reshape(batch * length, self.hidden)
        attention = layer.attention_norm(layer.attention_out(attended) + hidden)
        output: torch.Tensor = layer.output_norm(layer.output(F.gelu(layer.intermediate(attention))) + attention)
        return output


def _fuse(layer: Any) -> _Layer:  # a transformers BertLayer
    own = layer.attention.self
    return _Layer(
        qkv_weight=torch.cat([own.query.weight, own.key.weight, own.value.weight]).detach(),
        qkv_bias=torch.cat([own.query.bias, own.key.bias, own.value.bias]).detach(),
        attention_out=layer.attention.output.dense,
        attention_norm=layer.attention.output.LayerNorm,
        intermediate=layer.intermediate.dense,
        output=layer.output.dense,
        output_norm=layer.output.LayerNorm,
    )
