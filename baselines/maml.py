"""MAML (Finn et al. 2017) on an MLP head over frozen embeddings; FOMAML drops the second-order term.

The inner loop takes ``inner_steps`` SGD steps on the support loss, written functionally
(``torch.func.functional_call``) so the adapted weights stay a function of the initialization; the outer loop
(Adam) differentiates the query loss through those steps: ``torch.autograd.grad(create_graph=True)`` keeps the
second-order term, FOMAML treats the inner gradients as constants.

``head_init='proto'`` (the default) is Proto-MAML (Triantafillou et al. 2020, Meta-Dataset): before the inner loop,
in meta-training and at evaluation alike, the output layer is set from the support prototypes c_k (class means of
the head's penultimate features h): W_k = 2 c_k, b_k = −‖c_k‖², so the logits 2 c_k·h − ‖c_k‖² = ‖h‖² − ‖h − c_k‖²
rank classes as the nearest prototype does, and 0 inner steps is ProtoNet on h. Only the layers below are
meta-learned; the meta-gradient flows through the prototypes (in FOMAML too). Why: the class-to-index map is shuffled
per episode, so a meta-learned output layer starts every episode knowing no class and must learn them from k shots in
a few SGD steps; from the prototypes it starts where ProtoNet ends. (Measured on MiniLM features under disjoint
meta-training, neither head reaches a plain ProtoNet on the raw features yet: the meta-learned 64-unit layer loses
more than it gains; see the README.) ``head_init='learned'`` is the original MAML, as iclkit had it before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import MethodContext, row_predictions
from iclkit.metatrain import TrainingData, generator, label_index
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


HeadInit = Literal["learned", "proto"]


def output_layer(head: nn.Module) -> str:
    """Name prefix of the head's output layer's parameters (``'2.'``)."""
    return f"{len(head) - 1}."


def proto_init(head: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
    """Proto-MAML: ``params`` (the layers below the output layer) plus an output layer W_k = 2 c_k, b_k = −‖c_k‖²
    from the class means c_k of the penultimate features of the support ``x`` (labels ``y``); differentiable."""
    last = output_layer(head)
    body = {k: v for k, v in params.items() if not k.startswith(last)}
    feats = functional_call(head[:-1], body, (x,))
    onehot = nn.functional.one_hot(y, head[-1].out_features).to(feats.dtype)
    protos = onehot.T @ feats / onehot.sum(0).clamp(min=1).unsqueeze(1)
    # In the inner loop the output layer is a variable of its own: its gradient with respect to the body must be
    # the partial one, not also run back through the prototypes (which would free their graph in FOMAML). Aliases
    # of the body give that: the inner gradient stops at them; the outer one flows through both paths.
    return {**{k: v.view_as(v) for k, v in body.items()}, f"{last}weight": 2 * protos,
            f"{last}bias": -protos.pow(2).sum(-1)}


def inner_adapt(head: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                first_order: bool) -> Params:
    """``steps`` SGD steps on the support loss; differentiable w.r.t. ``params`` unless ``first_order``."""
    for _ in range(steps):
        loss = nn.functional.cross_entropy(functional_call(head, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        params = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    return params


def meta_loss(head: nn.Module, params: Params, batch: Sequence[Arrays], steps: int, lr: float,
              first_order: bool, head_init: HeadInit = "learned") -> torch.Tensor:
    """Mean query loss after adapting ``params`` to each episode's support (``head_init='proto'``: ``params`` hold
    the layers below the output layer, which each episode starts from its support prototypes)."""
    total = torch.zeros((), dtype=next(iter(params.values())).dtype)
    for xs, ys, xq, yq in batch:
        start = proto_init(head, params, xs, ys) if head_init == "proto" else params
        adapted = inner_adapt(head, start, xs, ys, steps, lr, first_order)
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
    head_init: HeadInit = "proto"
    loop: OuterLoop = OuterLoop(steps=300, lr=1e-3, meta_batch=4)
    seed: int = 0
    cache: bool = True
    progress: bool = True
    name: str = "maml"
    params: Params | None = field(default=None, repr=False)  # the meta-learned initialization
    trained_on: TrainingData | None = field(default=None, repr=False)
    _head: nn.Module | None = field(default=None, repr=False)

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "hidden": self.hidden, "inner_steps": self.inner_steps, "inner_lr": self.inner_lr,
                "first_order": self.first_order, "head_init": self.head_init, "meta_train": vars(self.loop),
                "backbone": self.featurize.description, "features": self.featurize.key,
                **({"meta_train_data": self.trained_on.to_dict()} if self.trained_on else {})}

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        self.n_way = self.n_way or len(episodes[0].labels)
        dim = self.featurize(episodes[0].support[:1]).shape[-1]
        self._head = head = mlp(dim, self.hidden, self.n_way)
        init = init_params(head, generator(self.seed, self.name, "init"))
        if self.head_init == "proto":  # the output layer comes from each episode's support: not meta-learned
            init = {k: v for k, v in init.items() if not k.startswith(output_layer(head))}
        loss = lambda p, batch: meta_loss(head, p, batch, self.inner_steps, self.inner_lr,  # noqa: E731
                                          self.first_order, self.head_init)
        config = {"hidden": self.hidden, "n_way": self.n_way, "inner_steps": self.inner_steps,
                  "inner_lr": self.inner_lr, "first_order": self.first_order, "head_init": self.head_init}
        self.params = meta_fit(self.name, init, loss, episodes, self.featurize, self.loop, self.seed, config,
                               cache=self.cache, progress=self.progress)
        self.trained_on = TrainingData.of(episodes) if self.loop.steps else None  # 0 steps: learned nothing

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "MAMLAdapted":
        if self.params is None or self._head is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        if len(labels) != self.n_way:
            raise ValueError(f"{self.name} was meta-trained for {self.n_way}-way episodes, got {len(labels)} labels")
        start = {k: v.clone().requires_grad_(True) for k, v in self.params.items()}
        xs, ys = self.featurize(support), label_index(support, labels)
        with torch.enable_grad():
            if self.head_init == "proto":
                start = proto_init(self._head, start, xs, ys)
            adapted = inner_adapt(self._head, start, xs, ys, self.inner_steps, self.inner_lr, first_order=True)
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


OPTIONS = OptionSpec(MAML, ("hidden", "inner_steps", "inner_lr", "head_init", "loop"), prefix="maml")


def _make(ctx: MethodContext, first_order: bool) -> MAML:
    return MAML(features_from(ctx), first_order=first_order, seed=ctx.seed, name="fomaml" if first_order else "maml",
                progress=ctx.progress, **ctx.learner_options(OPTIONS))


register("maml", options=OPTIONS)(lambda ctx: _make(ctx, first_order=False))
register("fomaml", options=OPTIONS)(lambda ctx: _make(ctx, first_order=True))
