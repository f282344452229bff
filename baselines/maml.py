"""MAML (Finn et al. 2017) on an MLP head over frozen embeddings; FOMAML drops the second-order term.

The inner loop takes ``inner_steps`` SGD steps on the support loss, written functionally
(``torch.func.functional_call``) so the adapted weights stay a function of the initialization; the outer loop
(Adam) differentiates the query loss through those steps: ``torch.autograd.grad(create_graph=True)`` keeps the
second-order term, FOMAML treats the inner gradients as constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import MethodContext, row_predictions
from iclkit.metatrain import generator, label_index
from iclkit.types import Episode, Example, Prediction

from iclkit.baselines.common import Arrays, Featurizer, OuterLoop, Params, features_from, meta_fit


def mlp(dim: int, hidden: int, n_way: int) -> nn.Module:
    """The head's structure (on the meta device: its weights always come in through functional_call)."""
    return nn.Sequential(nn.Linear(dim, hidden, device="meta"), nn.ReLU(), nn.Linear(hidden, n_way, device="meta"))


def init_params(head: nn.Module, g: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
    """nn.Linear's default init, U(±1/sqrt(fan_in)), drawn from ``g``."""
    out = {}
    for name, p in head.named_parameters():
        fan_in = head.get_submodule(name.rsplit(".", 1)[0]).in_features
        out[name] = (torch.rand(p.shape, generator=g, dtype=dtype) * 2 - 1) / fan_in ** 0.5
    return out


def inner_adapt(head: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                first_order: bool) -> Params:
    """``steps`` SGD steps on the support loss; differentiable w.r.t. ``params`` unless ``first_order``."""
    for _ in range(steps):
        loss = nn.functional.cross_entropy(functional_call(head, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        params = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    return params


def meta_loss(head: nn.Module, params: Params, batch: Sequence[Arrays], steps: int, lr: float,
              first_order: bool) -> torch.Tensor:
    """Mean query loss after adapting ``params`` to each episode's support."""
    total = torch.zeros((), dtype=next(iter(params.values())).dtype)
    for xs, ys, xq, yq in batch:
        adapted = inner_adapt(head, params, xs, ys, steps, lr, first_order)
        total = total + nn.functional.cross_entropy(functional_call(head, adapted, (xq,)), yq)
    return total / len(batch)


@dataclass
class MAML:
    featurize: Featurizer
    n_way: int = 0  # 0: taken from the meta-training episodes
    hidden: int = 64
    inner_steps: int = 5
    inner_lr: float = 0.1
    first_order: bool = False
    loop: OuterLoop = OuterLoop(steps=300, lr=1e-3, meta_batch=4)
    seed: int = 0
    cache: bool = True
    progress: bool = True
    name: str = "maml"
    params: Params | None = field(default=None, repr=False)  # the meta-learned initialization
    _head: nn.Module | None = field(default=None, repr=False)

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "hidden": self.hidden, "inner_steps": self.inner_steps, "inner_lr": self.inner_lr,
                "first_order": self.first_order, "meta_train": vars(self.loop), "backbone": self.featurize.description, "features": self.featurize.key}

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        self.n_way = self.n_way or len(episodes[0].labels)
        dim = self.featurize(episodes[0].support[:1]).shape[-1]
        self._head = head = mlp(dim, self.hidden, self.n_way)
        init = init_params(head, generator(self.seed, self.name, "init"))
        loss = lambda p, batch: meta_loss(head, p, batch, self.inner_steps, self.inner_lr,  # noqa: E731
                                          self.first_order)
        config = {"hidden": self.hidden, "n_way": self.n_way, "inner_steps": self.inner_steps,
                  "inner_lr": self.inner_lr, "first_order": self.first_order}
        self.params = meta_fit(self.name, init, loss, episodes, self.featurize, self.loop, self.seed, config,
                               cache=self.cache, progress=self.progress)

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "MAMLAdapted":
        if self.params is None or self._head is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        if len(labels) != self.n_way:
            raise ValueError(f"{self.name} was meta-trained for {self.n_way}-way episodes, got {len(labels)} labels")
        start = {k: v.clone().requires_grad_(True) for k, v in self.params.items()}
        with torch.enable_grad():
            adapted = inner_adapt(self._head, start, self.featurize(support), label_index(support, labels),
                                  self.inner_steps, self.inner_lr, first_order=True)
        return MAMLAdapted(self, {k: v.detach() for k, v in adapted.items()}, tuple(labels))


@dataclass(frozen=True)
class MAMLAdapted:
    learner: MAML
    params: Params
    labels: tuple[str, ...]

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        head = self.learner._head
        assert head is not None
        out = torch.log_softmax(functional_call(head, self.params, (self.learner.featurize(queries),)), dim=-1)
        return row_predictions(queries, self.labels, out)


OPTIONS = OptionSpec(MAML, ("hidden", "inner_steps", "inner_lr", "loop"), prefix="maml")


def _make(ctx: MethodContext, first_order: bool) -> MAML:
    return MAML(features_from(ctx), first_order=first_order, seed=ctx.seed, name="fomaml" if first_order else "maml",
                progress=ctx.progress, **ctx.learner_options(OPTIONS))


register("maml", options=OPTIONS)(lambda ctx: _make(ctx, first_order=False))
register("fomaml", options=OPTIONS)(lambda ctx: _make(ctx, first_order=True))
