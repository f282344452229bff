"""Control rows for the sequence meta-learners: ProtoNet and kNN on exactly the inputs MANN and the in-context
transformer read (each episode centred on its support, then projected on ``input_dim`` principal directions fit on
the meta-training items; ``iclkit.baselines.common.Bottleneck``).

A memory read can do what a nearest-neighbour lookup does, so kNN on the same inputs is MANN's floor; comparing
``knn`` with ``knn-bottleneck`` shows what the bottleneck alone costs, and ``knn-bottleneck`` with ``mann`` what the
learner adds or loses on top of it. Nothing is trained: the projection is fit on the meta-training pool (the same
texts the sequence learners' budget names), never on the evaluated task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import Capabilities, MethodContext, row_predictions
from iclkit.metatrain import TrainingData, is_validation, label_index
from iclkit.types import Episode, Example, Prediction

from iclkit.baselines.common import (Center, Featurizer, Bottleneck, center_from, episode_arrays, features_from,
                                     normalized, support_center)
from iclkit.baselines.knn import knn_scores
from iclkit.baselines.protonet import logits as proto_logits
from iclkit.baselines.sequence import SequenceLearner

Floor = Literal["protonet", "knn"]


@dataclass
class Bottlenecked:
    featurize: Featurizer
    floor: Floor = "knn"
    input_dim: int = SequenceLearner.input_dim  # the sequence learners' default bottleneck
    whiten: bool = SequenceLearner.whiten
    k: int = 5  # kNN's vote size (its default)
    center: Center = "support"
    name: str = "knn-bottleneck"
    trained_on: TrainingData | None = field(default=None, repr=False)
    _inputs: Bottleneck | None = field(default=None, repr=False)

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "floor": self.floor, "input_dim": self.input_dim,
                "inputs": "pca-whitened" if self.whiten else "pca-projection",
                "center": self.center, **({"k": self.k} if self.floor == "knn" else {}),
                "backbone": self.featurize.description, "features": self.featurize.key,
                **({"meta_train_data": self.trained_on.to_dict()} if self.trained_on else {})}

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        """Fit the projection on the meta-training items, as the sequence learners do; nothing else is learned."""
        train = [ep for ep in episodes if not is_validation(ep)]
        self._inputs = Bottleneck.fit(episode_arrays(self.featurize, train, self.center), self.input_dim, self.whiten)
        self.trained_on = TrainingData.of(train)

    def view(self, x: torch.Tensor, center: torch.Tensor | None) -> torch.Tensor:
        if self._inputs is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        return self._inputs(normalized(x, center))

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "BottleneckAdapted":
        xs = self.featurize(support)
        c = support_center(xs, self.center)
        return BottleneckAdapted(self, self.view(xs, c), label_index(support, labels), tuple(labels), c)


@dataclass(frozen=True)
class BottleneckAdapted:
    learner: Bottlenecked
    support: torch.Tensor
    support_labels: torch.Tensor
    labels: tuple[str, ...]
    center: torch.Tensor | None

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        m = self.learner
        xq = m.view(m.featurize(queries), self.center)
        if m.floor == "knn":
            out = knn_scores(self.support, self.support_labels, len(self.labels), xq, m.k, "vote", 0.1)
        else:
            out = proto_logits(self.support, self.support_labels, len(self.labels), xq, "sqeuclidean")
        return row_predictions(queries, self.labels, out)


OPTIONS = OptionSpec(Bottlenecked, ("input_dim", "whiten"), prefix="bottleneck")


def _make(ctx: MethodContext, floor: Floor) -> Bottlenecked:
    return Bottlenecked(features_from(ctx), floor=floor, center=center_from(ctx), name=f"{floor}-bottleneck",
                        **ctx.learner_options(OPTIONS))


TRAINS = Capabilities(meta_trains=True)  # the projection is fit on the meta-training items
register("knn-bottleneck", options=OPTIONS, capabilities=TRAINS)(lambda ctx: _make(ctx, "knn"))
register("protonet-bottleneck", options=OPTIONS, capabilities=TRAINS)(
    lambda ctx: _make(ctx, "protonet"))
