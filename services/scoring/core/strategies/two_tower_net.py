"""The two-tower network and its training loop (PyTorch), apart from the strategy around it.

Item tower: v_j = head_item(W x_j) + e_j, with x_j the frozen encoder's vector of the
item's text (from EmbeddingService) and e_j an optional learned item-id embedding.
User tower: u = head_user(aggregate of the last items of the history) + e_user, where each
history item enters as W x_j + h_j (h: a second, optional id table for history positions),
aggregated by a mean, a recency-weighted mean or attention over the positions.
Heads are residual MLPs (``layers`` = 0 is the identity). Score u·v; p = sigmoid(u·v).

Training is causal, matching how the model is used: each interaction of a user is a
target, predicted from that user's earlier interactions only. Everything random (the
initial weights, the order of examples, negatives, dropout) draws from one seeded
generator, so on the CPU the same data and parameters give the same weights.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional

from services.scoring.core.strategies.base import TrainingReport
from services.scoring.core.strategies.encoder_top import EncoderTraining

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": functional.gelu,
    "tanh": torch.tanh,
}
# Epochs without a better validation loss before training stops.
PATIENCE = 2


@dataclass(frozen=True)
class NetShape:
    dimension: int
    item_ids: bool
    user_ids: bool
    user_mode: str  # "mean", "recency" or "attention"
    half_life: float  # in history positions, for "recency"
    history_length: int
    layers: int
    hidden_size: int
    activation: str
    dropout: float


@dataclass(frozen=True)
class TrainingPlan:
    learning_rate: float
    weight_decay: float
    epochs: int
    batch_size: int
    negatives: int
    loss: str  # "sampled_softmax" or "bce"
    max_seconds: float
    seed: int


@dataclass(frozen=True)
class Examples:
    """Causal training examples: the padded last items before each target (``pad`` marks
    empty positions, padding on the left so the newest item is last), the target, and the
    user's row."""

    histories: torch.Tensor  # (n, history_length) int64
    targets: torch.Tensor  # (n,) int64
    users: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return len(self.targets)

    def to(self, device: torch.device) -> Examples:
        return Examples(self.histories.to(device), self.targets.to(device), self.users.to(device))

    def take(self, rows: torch.Tensor) -> Examples:
        return Examples(self.histories[rows], self.targets[rows], self.users[rows])


def padded_history(items: npt.NDArray[np.int64], length: int, pad: int) -> npt.NDArray[np.int64]:
    """The newest ``length`` items, left-padded with ``pad``."""
    row = np.full(length, pad, dtype=np.int64)
    newest = items[-length:] if length else items[:0]
    if len(newest):
        row[length - len(newest) :] = newest
    return row


def causal_examples(histories: list[npt.NDArray[np.int64]], length: int, pad: int) -> tuple[Examples, Examples]:
    """Training and validation examples. Each user's newest interaction (users with three or
    more) is the validation slice early stopping watches; every other interaction after a
    user's first is a training example."""
    train_rows: list[npt.NDArray[np.int64]] = []
    valid_rows: list[npt.NDArray[np.int64]] = []
    train_meta: list[tuple[int, int]] = []
    valid_meta: list[tuple[int, int]] = []
    for user, items in enumerate(histories):
        for position in range(1, len(items)):
            rows, meta = (
                (valid_rows, valid_meta)
                if position == len(items) - 1 and len(items) >= 3
                else (
                    train_rows,
                    train_meta,
                )
            )
            rows.append(padded_history(items[:position], length, pad))
            meta.append((int(items[position]), user))
    return _examples(train_rows, train_meta, length), _examples(valid_rows, valid_meta, length)


def _examples(rows: list[npt.NDArray[np.int64]], meta: list[tuple[int, int]], length: int) -> Examples:
    histories = np.stack(rows) if rows else np.zeros((0, length), dtype=np.int64)
    pairs = np.array(meta, dtype=np.int64).reshape(-1, 2)
    return Examples(
        torch.from_numpy(histories), torch.from_numpy(pairs[:, 0].copy()), torch.from_numpy(pairs[:, 1].copy())
    )


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound, generator=generator))


def _normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape).normal_(0.0, std, generator=generator))


class Head(nn.Module):
    """x + MLP(x): ``layers`` hidden layers of ``hidden`` units; no layers is the identity."""

    def __init__(self, shape: NetShape, generator: torch.Generator) -> None:
        super().__init__()
        sizes = [shape.dimension] + [shape.hidden_size] * shape.layers + [shape.dimension] if shape.layers else []
        self.weights = nn.ParameterList(
            _uniform((fan_out, fan_in), 1.0 / math.sqrt(fan_in), generator)
            for fan_in, fan_out in itertools.pairwise(sizes)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(fan_out)) for fan_out in sizes[1:])
        self.activation = ACTIVATIONS[shape.activation]
        self.dropout = shape.dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not len(self.weights):
            return x
        hidden = x
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = functional.linear(hidden, weight, bias)
            if index < last:
                hidden = _dropout(self.activation(hidden), self.dropout, generator)
        return x + hidden


def _dropout(x: torch.Tensor, rate: float, generator: torch.Generator | None) -> torch.Tensor:
    """Dropout drawn from the training generator (None: evaluation, nothing dropped)."""
    if generator is None or rate <= 0:
        return x
    keep = (torch.rand(x.shape, generator=generator) >= rate).to(x.device)
    return x * keep / (1.0 - rate)


class TwoTowerNet(nn.Module):
    text: torch.Tensor  # (n_items, encoder dimension), a buffer: moves with the module
    recency: torch.Tensor  # (history_length,) weights, newest last

    def __init__(self, text: torch.Tensor, n_users: int, shape: NetShape, generator: torch.Generator) -> None:
        super().__init__()
        self.shape = shape
        n_items, text_dimension = text.shape
        self.n_items = n_items
        self.register_buffer("text", text)
        self.projection = _uniform((shape.dimension, text_dimension), 1.0 / math.sqrt(text_dimension), generator)
        self.item_head = Head(shape, generator)
        self.user_head = Head(shape, generator)
        id_std = 0.01
        # Row n_items of the history table is the padding: zero, and never trained.
        self.item_ids = _normal((n_items, shape.dimension), id_std, generator) if shape.item_ids else None
        self.history_ids = _normal((n_items + 1, shape.dimension), id_std, generator) if shape.item_ids else None
        self.user_ids = _normal((n_users, shape.dimension), id_std, generator) if shape.user_ids else None
        length = shape.history_length
        self.query = _normal((shape.dimension,), 1.0 / math.sqrt(shape.dimension), generator)
        self.position_bias = nn.Parameter(torch.zeros(length))
        newest_last = torch.arange(length - 1, -1, -1, dtype=torch.float32)
        self.register_buffer("recency", torch.pow(0.5, newest_last / max(shape.half_life, 1e-6)))

    def projected(self) -> torch.Tensor:
        result: torch.Tensor = functional.linear(self.text, self.projection)
        return result

    def item_vectors(self, generator: torch.Generator | None = None) -> torch.Tensor:
        vectors: torch.Tensor = self.item_head(self.projected(), generator)
        return vectors + self.item_ids if self.item_ids is not None else vectors

    def history_inputs(self) -> torch.Tensor:
        """What each item contributes to a history (its projected text plus its history-id
        embedding), one row per item and a last row of zeros for the padding."""
        inputs = torch.cat([self.projected(), torch.zeros(1, self.shape.dimension, device=self.text.device)])
        if self.history_ids is not None:
            inputs = inputs + self.history_ids * self._not_padding_row()
        return inputs

    def user_vectors(
        self,
        histories: torch.Tensor,
        users: torch.Tensor | None,
        generator: torch.Generator | None = None,
        inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``users`` rows of -1 (users the fit never saw) get no user-id term. ``inputs``:
        ``history_inputs()`` computed once by the caller (serving), else computed here."""
        entries = (self.history_inputs() if inputs is None else inputs)[histories]
        present = (histories < self.n_items).to(entries.dtype)
        weights = self._weights(entries, present)
        pooled = (entries * weights[..., None]).sum(1)
        vectors: torch.Tensor = self.user_head(pooled, generator)
        if self.user_ids is not None and users is not None:
            known = users >= 0
            vectors = vectors + self.user_ids[users.clamp(min=0)] * known[:, None].to(vectors.dtype)
        return vectors

    def _not_padding_row(self) -> torch.Tensor:
        mask = torch.ones(self.n_items + 1, 1, device=self.text.device)
        mask[self.n_items] = 0.0
        return mask

    def _weights(self, entries: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Per position, summing to 1 over the present ones (0 for an empty history)."""
        if self.shape.user_mode == "attention":
            logits = entries @ self.query + self.position_bias
            logits = logits.masked_fill(present == 0, float("-inf"))
            weights = torch.softmax(logits, dim=1)
            return torch.nan_to_num(weights, nan=0.0)  # an all-padding row
        raw = present * (self.recency if self.shape.user_mode == "recency" else 1.0)
        return raw / raw.sum(1, keepdim=True).clamp(min=1e-12)

    def start_from(self, other: TwoTowerNet) -> None:
        """Copy ``other``'s weights (a warm start): tables that grew since (new items, new
        users) keep their own initial rows beyond ``other``'s."""
        theirs = other.state_dict()
        with torch.no_grad():
            for name, mine in self.state_dict().items():
                if name == "text" or name not in theirs:
                    continue  # the text vectors are this fit's own
                source = theirs[name]
                if source.shape == mine.shape:
                    mine.copy_(source)
                elif source.dim() == mine.dim() and source.shape[1:] == mine.shape[1:]:
                    rows = min(len(source), len(mine))
                    mine[:rows] = source[:rows]

    def forget_items(self, items: torch.Tensor) -> None:
        """Zero the id embeddings of items the fit never saw interacted with: their vectors
        then come from their text alone (new items), not from having been negatives."""
        with torch.no_grad():
            if self.item_ids is not None:
                self.item_ids[items] = 0.0
            if self.history_ids is not None:
                self.history_ids[items] = 0.0


def batch_loss(net: TwoTowerNet, batch: Examples, plan: TrainingPlan, generator: torch.Generator) -> torch.Tensor:
    device = net.text.device
    batch = batch.to(device)
    users = batch.users if net.user_ids is not None else None
    user = net.user_vectors(batch.histories, users, generator)
    items = net.item_vectors(generator)
    if plan.loss == "bce":
        negatives = torch.randint(0, net.n_items, (len(batch), plan.negatives), generator=generator).to(device)
        positive = (user * items[batch.targets]).sum(1, keepdim=True)
        negative = torch.einsum("bd,bnd->bn", user, items[negatives])
        logits = torch.cat([positive, negative], dim=1)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return functional.binary_cross_entropy_with_logits(logits, labels)
    if plan.negatives >= net.n_items - 1:  # the whole catalogue is cheaper than sampling it
        return functional.cross_entropy(user @ items.T, batch.targets)
    # Uniform negatives shared by the batch; a negative that is the row's own target is masked.
    negatives = torch.randint(0, net.n_items, (plan.negatives,), generator=generator).to(device)
    positive = (user * items[batch.targets]).sum(1, keepdim=True)
    negative = (user @ items[negatives].T).masked_fill(negatives[None, :] == batch.targets[:, None], float("-inf"))
    logits = torch.cat([positive, negative], dim=1)
    return functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.int64, device=device))


def validation_loss(net: TwoTowerNet, examples: Examples) -> float:
    """Full-catalogue softmax cross-entropy of the validation targets: comparable between
    epochs whatever the training loss."""
    if not len(examples):
        return float("nan")
    examples = examples.to(net.text.device)
    with torch.no_grad():
        users = examples.users if net.user_ids is not None else None
        logits = net.user_vectors(examples.histories, users) @ net.item_vectors().T
        return float(functional.cross_entropy(logits, examples.targets))


def train(
    net: TwoTowerNet,
    train_set: Examples,
    valid_set: Examples,
    plan: TrainingPlan,
    generator: torch.Generator,
    encoder: EncoderTraining | None = None,
) -> TrainingReport:
    """AdamW with early stopping on the validation slice; the best epoch's weights are kept.
    Stops after the epoch that would take the fit past ``plan.max_seconds`` (projected from
    the epochs so far), and says so. With ``encoder``, the encoder's top layers are trained
    too, one step per epoch (encoder_top), and their best epoch's weights are kept with the
    net's (its text vectors are the fine-tuned ones)."""
    started = time.perf_counter()
    optimiser = torch.optim.AdamW(net.parameters(), lr=plan.learning_rate, weight_decay=plan.weight_decay)
    best = (math.inf, 0, math.nan)  # validation loss, epoch, training loss
    best_state = _copy(net)
    best_encoder = encoder.state() if encoder else None
    initial_loss = validation_loss(net, valid_set)
    stopped, epoch = "max_epochs", 0
    for epoch in range(1, plan.epochs + 1):
        if encoder is not None:
            net.text = encoder.begin_epoch(net.text)
        training_loss, steps = _epoch(net, train_set, plan, optimiser, generator)
        if encoder is not None:
            net.text = encoder.end_epoch(net.text, steps)
        loss = validation_loss(net, valid_set)
        # Without a validation slice (tiny data) every epoch counts as the best so far.
        if not len(valid_set) or loss < best[0]:
            best = (loss, epoch, training_loss)
            best_state = _copy(net)
            best_encoder = encoder.state() if encoder else None
        elapsed = time.perf_counter() - started
        if epoch - best[1] >= PATIENCE:
            stopped = "early_stopping"
            break
        if epoch < plan.epochs and elapsed + elapsed / epoch > plan.max_seconds:
            stopped = "max_fit_seconds"
            break
    net.load_state_dict(best_state)
    if encoder is not None and best_encoder is not None:
        encoder.load(best_encoder)
    device = str(net.text.device)
    seconds = time.perf_counter() - started
    return TrainingReport(epoch, best[1], best[2], best[0], initial_loss, stopped, seconds, device)


def _copy(net: TwoTowerNet) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in net.state_dict().items()}


def _epoch(
    net: TwoTowerNet,
    examples: Examples,
    plan: TrainingPlan,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[float, int]:
    """One pass over the examples; the mean training loss and the number of steps."""
    net.train()
    order = torch.randperm(len(examples), generator=generator)
    total, seen = 0.0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=net.text.device.type == "cuda")
    for start in range(0, len(examples), plan.batch_size):
        batch = examples.take(order[start : start + plan.batch_size])
        with autocast:
            loss = batch_loss(net, batch, plan, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        total += float(loss.detach()) * len(batch)
        seen += len(batch)
    net.eval()
    return total / max(1, seen), -(-len(examples) // plan.batch_size)
