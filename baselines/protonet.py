"""Prototypical networks (Snell et al. 2017): classify a query by its nearest class prototype (mean support vector).

Without a projection the prototypes live in the frozen embedding space (each episode centred on its own support:
``iclkit.baselines.common.normalized``). ``project=True`` (``protonet-proj``) adds a square linear map W meta-trained
with the episodic loss (softmax over negative distances to the prototypes of the episode's classes, Snell et al.
eq. 2). W starts at the identity, so before meta-training protonet-proj *is* ProtoNet, and early stopping on
meta-validation episodes (step 0 included) keeps it there unless training helps on held-out classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import Capabilities, MethodContext, row_predictions
from iclkit.metatrain import TrainingData, label_index
from iclkit.types import Episode, Example, Prediction

from iclkit.baselines.common import (Arrays, Center, Featurizer, Fitted, OuterLoop, Params, center_from,
                                     episode_accuracy, features_from, meta_fit, meta_options, normalized,
                                     support_center)
from iclkit.baselines.search import SearchResult, tune

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
    project: bool = False  # meta-train a square linear map, starting from the identity (protonet-proj)
    center: Center = "support"
    loop: OuterLoop = OuterLoop(steps=300, lr=1e-3, meta_batch=8)
    seed: int = 0
    cache: bool = True
    progress: bool = True
    name: str = "protonet"
    projection: torch.Tensor | None = field(default=None, repr=False)  # meta-trained weights, never episode state
    trained_on: TrainingData | None = field(default=None, repr=False)  # None: learned from no meta-training episode
    fitted: Fitted | None = field(default=None, repr=False)
    search_trials: int = 0  # Optuna trials on meta-validation episodes before meta-training (protonet-proj)
    searched: SearchResult | None = field(default=None, repr=False)

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "metric": self.metric, "center": self.center,
                "backbone": self.featurize.description, "features": self.featurize.key,
                **({"projection": "square, identity init", "meta_train": vars(self.loop)} if self.project else {}),
                **({"meta_val": self.fitted.to_dict()} if self.fitted and self.fitted.curve else {}),
                **({"search": self.searched.to_dict()} if self.searched else {}),
                **({"meta_train_data": self.trained_on.to_dict()} if self.trained_on else {})}

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        if not self.project:
            return  # nothing to learn: prototypes in the frozen space
        tune(self, search_space, episodes)
        dim = self.featurize(episodes[0].support[:1]).shape[-1]
        init = {"W": torch.eye(dim)}  # the identity: ProtoNet itself

        def episode_logits(p: Params, a: Arrays) -> torch.Tensor:
            xs, ys, xq, yq = a
            return logits(xs @ p["W"], ys, int(max(ys.max(), yq.max())) + 1, xq @ p["W"], self.metric)

        def loss(p: Params, batch: Sequence[Arrays]) -> torch.Tensor:
            return sum((torch.nn.functional.cross_entropy(episode_logits(p, a), a[3]) for a in batch),
                       torch.zeros(())) / len(batch)

        self.fitted = meta_fit(self.name, init, loss, episodes, self.featurize, self.loop, self.seed,
                               {"metric": self.metric, "projection": "identity"}, center=self.center,
                               accuracy=episode_accuracy(episode_logits), cache=self.cache, progress=self.progress)
        self.projection = self.fitted.params["W"]
        self.trained_on = TrainingData.of(episodes) if self.loop.steps else None  # 0 steps: learned nothing

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "ProtoAdapted":
        if self.project and self.projection is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        xs = self.featurize(support)
        c = support_center(xs, self.center)
        return ProtoAdapted(self, self._view(xs, c), label_index(support, labels), tuple(labels), c)

    def _view(self, x: torch.Tensor, center: torch.Tensor | None) -> torch.Tensor:
        x = normalized(x, center)
        return x if self.projection is None else x @ self.projection


@dataclass(frozen=True)
class ProtoAdapted:
    learner: ProtoNet
    support: torch.Tensor
    support_labels: torch.Tensor
    labels: tuple[str, ...]
    center: torch.Tensor | None

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        xq = self.learner._view(self.learner.featurize(queries), self.center)
        out = logits(self.support, self.support_labels, len(self.labels), xq, self.learner.metric)
        return row_predictions(queries, self.labels, out)


def search_space(trial: Any) -> dict[str, Any]:
    """protonet-proj's search space: the outer loop's learning rate and length (early stopping picks the step)."""
    return {"loop.lr": trial.suggest_float("loop.lr", 1e-4, 1e-2, log=True),
            "loop.steps": trial.suggest_categorical("loop.steps", [150, 300, 600])}


PLAIN = OptionSpec(ProtoNet, ("metric",), prefix="protonet")
PROJECTED = OptionSpec(ProtoNet, ("metric", "loop"), prefix="protonet")


def _make(ctx: MethodContext, name: str, spec: OptionSpec) -> ProtoNet:
    extra = meta_options(ctx) if spec is PROJECTED else {"center": center_from(ctx)}
    return ProtoNet(features_from(ctx), project=spec is PROJECTED, seed=ctx.seed, name=name, progress=ctx.progress,
                    **extra, **ctx.learner_options(spec))


# plain ProtoNet learns nothing from meta-training episodes: it never needs their sources
register("protonet", options=PLAIN, capabilities=Capabilities(meta_trains=False))(
    lambda ctx: _make(ctx, "protonet", PLAIN))
register("protonet-proj", options=PROJECTED, capabilities=Capabilities(meta_trains=True))(
    lambda ctx: _make(ctx, "protonet-proj", PROJECTED))
