"""Prototypical networks (Snell et al. 2017): classify a query by its nearest class prototype (mean support vector).

Without a projection the prototypes live in the frozen embedding space; ``projection_dim > 0`` adds a linear map
meta-trained with the episodic loss (softmax over negative distances to the prototypes of the episode's classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import MethodContext, row_predictions
from iclkit.metatrain import TrainingData, generator, label_index
from iclkit.types import Episode, Example, Prediction

from iclkit.baselines.common import Arrays, Featurizer, OuterLoop, Params, features_from, meta_fit

Metric = Literal["sqeuclidean", "cosine"]


def logits(support: torch.Tensor, labels: torch.Tensor, n_way: int, queries: torch.Tensor,
           metric: Metric, scale: float = 10.0) -> torch.Tensor:
    """Scores [n_query, n_way]: negative squared distance (or scaled cosine) to each class prototype."""
    onehot = torch.nn.functional.one_hot(labels, n_way).to(support.dtype)
    protos = onehot.T @ support / onehot.sum(0).clamp(min=1).unsqueeze(1)
    if metric == "cosine":
        return scale * torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(protos, dim=-1).T
    return -torch.cdist(queries, protos).pow(2)


@dataclass
class ProtoNet:
    featurize: Featurizer
    metric: Metric = "sqeuclidean"
    projection_dim: int = 0
    loop: OuterLoop = OuterLoop(steps=300, lr=1e-3, meta_batch=8)
    seed: int = 0
    cache: bool = True
    progress: bool = True
    name: str = "protonet"
    projection: torch.Tensor | None = field(default=None, repr=False)  # meta-trained weights, never episode state
    trained_on: TrainingData | None = field(default=None, repr=False)  # None: learned from no meta-training episode

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "metric": self.metric, "projection_dim": self.projection_dim,
                "backbone": self.featurize.description, "features": self.featurize.key,
                **({"meta_train": vars(self.loop)} if self.projection_dim else {}),
                **({"meta_train_data": self.trained_on.to_dict()} if self.trained_on else {})}

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        if not self.projection_dim:
            return  # nothing to learn: prototypes in the frozen space
        dim = self.featurize(episodes[0].support[:1]).shape[-1]
        g = generator(self.seed, self.name, "init")
        init = {"W": torch.randn(dim, self.projection_dim, generator=g) / dim ** 0.5}

        def loss(p: Params, batch: Sequence[Arrays]) -> torch.Tensor:
            total = torch.zeros(())
            for xs, ys, xq, yq in batch:
                n_way = int(max(ys.max(), yq.max())) + 1
                out = logits(xs @ p["W"], ys, n_way, xq @ p["W"], self.metric)
                total = total + torch.nn.functional.cross_entropy(out, yq)
            return total / len(batch)

        self.projection = meta_fit(self.name, init, loss, episodes, self.featurize, self.loop, self.seed,
                                   {"metric": self.metric, "dim": self.projection_dim}, cache=self.cache,
                                   progress=self.progress)["W"]
        self.trained_on = TrainingData.of(episodes) if self.loop.steps else None  # 0 steps: learned nothing

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "ProtoAdapted":
        if self.projection_dim and self.projection is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        w = self.projection
        xs = self.featurize(support)
        return ProtoAdapted(self, xs if w is None else xs @ w, label_index(support, labels), tuple(labels))


@dataclass(frozen=True)
class ProtoAdapted:
    learner: ProtoNet
    support: torch.Tensor
    support_labels: torch.Tensor
    labels: tuple[str, ...]

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        xq = self.learner.featurize(queries)
        if self.learner.projection is not None:
            xq = xq @ self.learner.projection
        out = logits(self.support, self.support_labels, len(self.labels), xq, self.learner.metric)
        return row_predictions(queries, self.labels, out)


PLAIN = OptionSpec(ProtoNet, ("metric",), prefix="protonet")
PROJECTED = OptionSpec(ProtoNet, ("metric", "projection_dim", "loop"), prefix="protonet",
                       defaults={"projection_dim": 128}, aliases={"dim": "projection_dim"})


def _make(ctx: MethodContext, name: str, spec: OptionSpec) -> ProtoNet:
    return ProtoNet(features_from(ctx), seed=ctx.seed, name=name, progress=ctx.progress,
                    **ctx.learner_options(spec))


register("protonet", options=PLAIN)(lambda ctx: _make(ctx, "protonet", PLAIN))
register("protonet-proj", options=PROJECTED)(lambda ctx: _make(ctx, "protonet-proj", PROJECTED))
