"""A BERT two-tower recommender: item vectors from the item's text, user vectors from the
history, score u·v and interest probability sigmoid(u·v), trained on the interactions.

The encoder (EmbeddingService) stays frozen: its vectors of item texts are the item
tower's input, so an item with text but no interactions yet still gets a real vector
(its id embedding is zeroed; see ``TwoTowerNet.forget_items``). The user vector is
computed from the current history at every request, so a click changes the next list
without a refit. The network and its training are in ``two_tower_net``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch

from rectune.domain.configuration import ParamValue
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.strategies.base import (
    DotProductModel,
    FittedModel,
    Scores,
    ScoringContext,
    Strategy,
    TrainingReport,
)
from services.scoring.core.strategies.encoder_top import EncoderTop, EncoderTraining, PrefixCache
from services.scoring.core.strategies.two_tower_net import (
    ACTIVATIONS,
    NetShape,
    TrainingPlan,
    TwoTowerNet,
    causal_examples,
    padded_history,
    train,
)
from services.scoring.core.vectors import ItemVectors

SEED = 42
DEFAULT_MAX_FIT_SECONDS = 600.0

SPACE = StrategySpace(
    "two_tower",
    "BERT two-tower: item tower from the item text's encoder vector (+ id embedding), user tower "
    "from the history; score u.v, probability sigmoid(u.v); trained with AdamW on the interactions.",
    (
        Hyperparameter("dimension", ParamType.INT, 64, "size of u and v", 8, 512, True),
        Hyperparameter("item_id_embedding", ParamType.BOOL, True, "learn an id embedding per item (besides its text)"),
        Hyperparameter("user_id_embedding", ParamType.BOOL, False, "learn an id embedding per user"),
        Hyperparameter(
            "user_mode",
            ParamType.CATEGORICAL,
            "recency",
            "how the history's items become the user vector",
            choices=("mean", "recency", "attention"),
        ),
        Hyperparameter(
            "half_life", ParamType.FLOAT, 10.0, "recency half-life in history positions (newest = 0)", 1.0, 200.0, True
        ),
        Hyperparameter("history_length", ParamType.INT, 50, "newest history items the user tower reads", 5, 200, True),
        Hyperparameter("layers", ParamType.INT, 0, "hidden layers of each tower's residual MLP head", 0, 3),
        Hyperparameter("hidden_size", ParamType.INT, 128, "units per hidden layer", 16, 1024, True),
        Hyperparameter("activation", ParamType.CATEGORICAL, "gelu", "of the hidden layers", choices=tuple(ACTIVATIONS)),
        Hyperparameter("dropout", ParamType.FLOAT, 0.0, "of the hidden layers", 0.0, 0.5),
        Hyperparameter("learning_rate", ParamType.FLOAT, 3e-3, "AdamW learning rate", 1e-5, 1e-1, True),
        Hyperparameter("weight_decay", ParamType.FLOAT, 0.0, "AdamW weight decay", 0.0, 0.1),
        Hyperparameter("epochs", ParamType.INT, 10, "most epochs (early stopping may end sooner)", 1, 100),
        Hyperparameter("batch_size", ParamType.INT, 256, "examples per step", 16, 8192, True),
        Hyperparameter(
            "negatives",
            ParamType.INT,
            1024,
            "sampled negatives (per batch for softmax, per example for bce)",
            1,
            4096,
            True,
        ),
        Hyperparameter(
            "loss",
            ParamType.CATEGORICAL,
            "sampled_softmax",
            "sampled softmax over the negatives, or binary cross-entropy against them",
            choices=("sampled_softmax", "bce"),
        ),
        Hyperparameter(
            "finetune_layers",
            ParamType.INT,
            0,
            "top transformer layers of the BERT encoder trained with the towers (0: its frozen vectors; "
            "6 is all of all-MiniLM-L6-v2)",
            0,
            6,
            added_later=True,
        ),
        Hyperparameter(
            "encoder_learning_rate",
            ParamType.FLOAT,
            1e-3,
            "AdamW learning rate of the trained encoder layers (one step per epoch)",
            1e-6,
            1e-2,
            True,
            added_later=True,
        ),
        Hyperparameter(
            "encoder_weight_decay",
            ParamType.FLOAT,
            0.01,
            "AdamW weight decay of the trained encoder layers",
            0.0,
            0.1,
            added_later=True,
        ),
    ),
)


def net_shape(params: Mapping[str, ParamValue]) -> NetShape:
    return NetShape(
        dimension=int(params["dimension"]),
        item_ids=bool(params["item_id_embedding"]),
        user_ids=bool(params["user_id_embedding"]),
        user_mode=str(params["user_mode"]),
        half_life=float(params["half_life"]),
        history_length=int(params["history_length"]),
        layers=int(params["layers"]),
        hidden_size=int(params["hidden_size"]),
        activation=str(params["activation"]),
        dropout=float(params["dropout"]),
    )


def training_plan(params: Mapping[str, ParamValue], max_seconds: float, seed: int = SEED) -> TrainingPlan:
    return TrainingPlan(
        learning_rate=float(params["learning_rate"]),
        weight_decay=float(params["weight_decay"]),
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        negatives=int(params["negatives"]),
        loss=str(params["loss"]),
        max_seconds=max_seconds,
        seed=seed,
    )


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TwoTowerModel(DotProductModel):
    """Item vectors computed once at fit; a user's vector from their history at each call."""

    # sigmoid(u·v) is a probability as trained: the service compares it with Platt scaling.
    native_probability = True
    # Models stored before fine-tuning existed unpickle without the attribute.
    encoder_layers: dict[str, torch.Tensor] | None = None

    def __init__(
        self, net: TwoTowerNet, training: TrainingReport, encoder_layers: dict[str, torch.Tensor] | None = None
    ) -> None:
        # The trained top layers of the encoder, when the fit fine-tuned them (the item
        # vectors below already come from them; a refit starts from them).
        self.encoder_layers = encoder_layers
        self.net = net.to("cpu").eval()
        with torch.no_grad():
            self.item_matrix = self.net.item_vectors().numpy().astype(np.float32)
            # The history side of every item, once: a request then reads only its user's rows.
            self.history_table = self.net.history_inputs()
        self.training = training
        self.n_items = len(self.item_matrix)

    def user_vector(self, context: ScoringContext) -> np.ndarray:
        history = context.history
        items = history.items[history.items < self.n_items]
        row = padded_history(items, self.net.shape.history_length, self.n_items)
        user = torch.tensor([-1 if context.user_row is None else context.user_row])
        if (
            self.net.user_ids is not None
            and context.user_row is not None
            and context.user_row >= len(self.net.user_ids)
        ):
            user = torch.tensor([-1])  # a user who arrived after the fit
        with torch.no_grad():
            vector = self.net.user_vectors(torch.from_numpy(row)[None, :], user, inputs=self.history_table)[0]
        return vector.numpy().astype(np.float32)

    # Scores are dot products: an approximate index can rank them (retrieval.py).
    score_scale = 1.0

    def item_vectors(self) -> npt.NDArray[np.float32]:
        return self.item_matrix

    def query(self, context: ScoringContext) -> npt.NDArray[np.float32]:
        return self.user_vector(context)

    def scores(self, context: ScoringContext) -> Scores:
        result: Scores = (self.item_matrix @ self.user_vector(context)).astype(np.float64)
        return result

    def nbytes(self) -> int:
        layers = sum(t.numel() * t.element_size() for t in (self.encoder_layers or {}).values())
        weights = layers + sum(p.numel() * p.element_size() for p in self.net.parameters())
        tables = self.net.text.numel() * self.net.text.element_size() + self.history_table.numel() * 4
        return int(self.item_matrix.nbytes + weights + tables)


class TwoTower(Strategy):
    space = SPACE
    budget_param = "epochs"
    # Its fitted models (arrays and a PyTorch module) are kept in the model store.
    stored = True

    def __init__(
        self, vectors: ItemVectors, max_fit_seconds: float = DEFAULT_MAX_FIT_SECONDS, seed: int = SEED
    ) -> None:
        self.vectors = vectors
        self.max_fit_seconds = max_fit_seconds
        self.seed = seed  # of every fit's initial weights, order and negatives (benchmarks vary it)
        self.prefixes = PrefixCache()

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> TwoTowerModel:
        text = torch.from_numpy(self.vectors.matrix(data.n_items))
        return fit_two_tower(text, data, params, self.max_fit_seconds, None, self.encoder_top(data, params), self.seed)

    def refit(
        self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None, previous: FittedModel
    ) -> TwoTowerModel:
        """Starts from the serving model's weights (items and users added since keep fresh rows)."""
        text = torch.from_numpy(self.vectors.matrix(data.n_items))
        start = previous if isinstance(previous, TwoTowerModel) else None
        return fit_two_tower(text, data, params, self.max_fit_seconds, start, self.encoder_top(data, params), self.seed)

    def encoder_top(self, data: TrainingData, params: Mapping[str, ParamValue]) -> FineTuning | None:
        """The encoder's top layers to train, over the frozen rest (None: its frozen vectors)."""
        layers = int(params.get("finetune_layers", 0))
        if layers == 0:
            return None
        prefix, cached = self.prefixes.get(self.vectors.model_name(), self.vectors.texts(data.n_items), layers)
        top = EncoderTop(prefix, data.n_items)
        training = EncoderTraining(top, float(params["encoder_learning_rate"]), float(params["encoder_weight_decay"]))
        return FineTuning(training, layers, cached)


@dataclass(frozen=True)
class FineTuning:
    """The encoder's top layers a fit trains (finetune_layers > 0)."""

    training: EncoderTraining
    layers: int
    cache_hit: bool

    def report(self, report: TrainingReport) -> TrainingReport:
        return replace(
            report,
            encoder_layers_trained=self.layers,
            encoder_parameters_trained=self.training.top.trained_parameters(),
            frozen_activation_bytes=self.training.top.prefix.nbytes,
            frozen_activation_cache_hit=self.cache_hit,
        )


def fit_two_tower(
    text: torch.Tensor,
    data: TrainingData,
    params: Mapping[str, ParamValue],
    max_fit_seconds: float,
    previous: TwoTowerModel | None = None,
    encoder: FineTuning | None = None,
    seed: int = SEED,
) -> TwoTowerModel:
    """Seeded: the same text vectors, data and parameters give the same model on the CPU.
    With ``previous`` (a refit), training starts from its weights: items and users added
    since keep their fresh initial rows. With ``encoder``, the text vectors are the
    encoder's own output through its trained top layers (encoder_top), and those layers
    train with the towers; they are kept with the model."""
    shape, plan = net_shape(params), training_plan(params, max_fit_seconds, seed)
    generator = torch.Generator().manual_seed(plan.seed)
    device = training_device()
    if device.type == "cpu":
        # Accumulating gradients into embedding rows from two threads adds in a varying order
        # (differences near 1e-7) unless torch is told to pick deterministic kernels. Left on
        # for the process: fits run concurrently, and nothing here wants otherwise.
        torch.use_deterministic_algorithms(True, warn_only=True)
    if encoder is not None:
        if previous is not None and previous.encoder_layers is not None:
            encoder.training.top.layers.load_state_dict(previous.encoder_layers)
        encoder.training.top.to(device)
        text = encoder.training.top.vectors()
    net = TwoTowerNet(text.float(), data.n_users, shape, generator)
    if previous is not None and previous.net.shape == shape:
        net.start_from(previous.net)
    net = net.to(device)
    histories = [history.items for history in data.histories()]
    train_set, valid_set = causal_examples(histories, shape.history_length, data.n_items)
    report = train(net, train_set, valid_set, plan, generator, encoder.training if encoder else None)
    seen = np.unique(data.items)
    unseen = np.setdiff1d(np.arange(data.n_items), seen)
    net.forget_items(torch.from_numpy(unseen).to(device))
    if encoder is None:
        return TwoTowerModel(net, report)
    net.text = net.text.detach()
    layers = {name: value.cpu() for name, value in encoder.training.state().items()}
    return TwoTowerModel(net, encoder.report(report), layers)
