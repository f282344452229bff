"""Non-parametric memory: the support embeddings are stored and a query takes a vote of its k most similar ones.

``mode='vote'``: each of the k nearest (cosine) neighbours votes for its class, ties broken by summed similarity;
``mode='softmax'``: class score = log-sum-exp of similarity / temperature over that class's support items.
Vectors are centred on the episode's own support mean first (``center``), as every baseline's are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import torch

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import MethodContext, row_predictions
from iclkit.metatrain import label_index
from iclkit.types import Example, Prediction

from iclkit.baselines.common import Center, Featurizer, center_from, features_from, normalized, support_center

Mode = Literal["vote", "softmax"]


def knn_scores(support: torch.Tensor, labels: torch.Tensor, n_way: int, queries: torch.Tensor, k: int,
               mode: Mode, temperature: float) -> torch.Tensor:
    """Per-class scores [n_query, n_way]."""
    sim = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(support, dim=-1).T
    if mode == "softmax":
        masked = (sim / temperature).unsqueeze(1).expand(-1, n_way, -1).clone()
        masked[:, (labels.unsqueeze(0) != torch.arange(n_way).unsqueeze(1))] = float("-inf")
        return torch.logsumexp(masked, dim=-1)
    top = sim.topk(min(k, support.shape[0]), dim=-1)
    onehot = torch.nn.functional.one_hot(labels[top.indices], n_way).to(sim.dtype)  # [q, k, n_way]
    votes = onehot.sum(1)
    tiebreak = (onehot * top.values.unsqueeze(-1)).sum(1) / (k + 1)  # < 1 vote: only settles ties
    return votes + tiebreak


@dataclass(frozen=True)
class KNN:
    featurize: Featurizer
    k: int = 5
    mode: Mode = "vote"
    temperature: float = 0.1
    center: Center = "support"
    name: str = "knn"

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "k": self.k, "mode": self.mode, "temperature": self.temperature,
                "center": self.center, "backbone": self.featurize.description, "features": self.featurize.key}

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "KNNAdapted":
        xs = self.featurize(support)
        c = support_center(xs, self.center)
        return KNNAdapted(self, normalized(xs, c), label_index(support, labels), tuple(labels), c)


@dataclass(frozen=True)
class KNNAdapted:
    learner: KNN
    memory: torch.Tensor
    memory_labels: torch.Tensor
    labels: tuple[str, ...]
    center: torch.Tensor | None = None

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        kn = self.learner
        out = knn_scores(self.memory, self.memory_labels, len(self.labels),
                         normalized(kn.featurize(queries), self.center), kn.k, kn.mode,
                         kn.temperature)
        return row_predictions(queries, self.labels, out)


OPTIONS = OptionSpec(KNN, ("k", "mode", "temperature"), prefix="knn")


@register("knn", options=OPTIONS)
def _make(ctx: MethodContext) -> KNN:
    return KNN(features_from(ctx), center=center_from(ctx), **ctx.learner_options(OPTIONS))
