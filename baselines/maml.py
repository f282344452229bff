"""MAML (Finn et al. 2017) on a residual body over frozen embeddings; FOMAML drops the second-order term.

The inner loop takes ``inner_steps`` SGD steps on the support loss (Finn et al. eq. 1), written functionally
(``torch.func.functional_call``) so the adapted weights stay a function of the initialization; the outer loop
(Adam) differentiates the query loss through those steps (eq. 3): ``torch.autograd.grad(create_graph=True)`` keeps
the second-order term, FOMAML treats the inner gradients as constants.

The body is one residual block, h = x + W₂ relu(W₁ x + b₁) + b₂, with W₂ and b₂ starting at zero: before
meta-training h = x. ``head_init='proto'`` (the default) is Proto-MAML (Triantafillou et al. 2020, Meta-Dataset,
Sec. 3.2): before the inner loop, in meta-training and at evaluation alike, the output layer is set from the support
prototypes c_k (class means of h): W_k = 2 c_k, b_k = −‖c_k‖², so the logits 2 c_k·h − ‖c_k‖² = ‖h‖² − ‖h − c_k‖²
rank classes as the nearest prototype does. With the identity body, 0 inner steps is ProtoNet on the episode's own
features, exactly (tests/test_floors.py): MAML starts at its floor, and early stopping on meta-validation episodes
(step 0 included) keeps it there unless meta-training helps on held-out classes. Only the body is meta-learned;
the meta-gradient flows through the prototypes (in FOMAML too). ``head_init='learned'`` is the original MAML
(a meta-learned output layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import Capabilities, MethodContext, row_predictions
from iclkit.metatrain import TrainingData, generator, is_validation, label_index
from iclkit.types import Episode, Example, Prediction

from iclkit.baselines.common import (Arrays, Center, Featurizer, Fitted, OuterLoop, Params, episode_accuracy,
                                     episode_arrays, features_from, meta_fit, meta_options, normalized,
                                     support_center)
from iclkit.baselines.search import SearchResult, tune


class Residual(nn.Module):
    """h = x + fc2(relu(fc1(x))) (on the meta device: weights always come in through functional_call)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device="meta")
        self.fc2 = nn.Linear(hidden, dim, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


def network(dim: int, hidden: int, n_way: int) -> nn.Sequential:
    """The body (one residual block) and the output layer."""
    return nn.Sequential(Residual(dim, hidden), nn.Linear(dim, n_way, device="meta"))


def init_params(head: nn.Module, g: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
    """nn.Linear's default init, U(±1/sqrt(fan_in)), drawn from ``g``, except the residual branch's last layer,
    which starts at zero (the body starts as the identity)."""
    out = {}
    for name, p in head.named_parameters():
        fan_in = head.get_submodule(name.rsplit(".", 1)[0]).in_features
        out[name] = (torch.rand(p.shape, generator=g, dtype=dtype) * 2 - 1) / fan_in ** 0.5
        if name.startswith("0.fc2."):
            out[name] = torch.zeros(p.shape, dtype=dtype)
    return out


HeadInit = Literal["learned", "proto"]


def output_layer(head: nn.Module) -> str:
    """Name prefix of the head's output layer's parameters (``'1.'``)."""
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


def adapt_params(head: nn.Module, params: Params, xs: torch.Tensor, ys: torch.Tensor, steps: int, lr: float,
                 head_init: HeadInit) -> Params:
    """The weights after adapting ``params`` to one support set (first-order inner loop: nothing is
    backpropagated past it), detached."""
    with torch.enable_grad():
        start = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        if head_init == "proto":
            start = proto_init(head, start, xs, ys)
        adapted = inner_adapt(head, start, xs, ys, steps, lr, first_order=True)
    return {k: v.detach() for k, v in adapted.items()}


@dataclass
class MAML:
    featurize: Featurizer
    n_way: int = 0  # 0: taken from the meta-training episodes
    hidden: int = 64
    inner_steps: int = 5
    inner_lr: float = 0.1
    first_order: bool = False
    head_init: HeadInit = "proto"
    center: Center = "support"
    loop: OuterLoop = OuterLoop(steps=300, lr=1e-3, meta_batch=4)
    seed: int = 0
    cache: bool = True
    progress: bool = True
    name: str = "maml"
    params: Params | None = field(default=None, repr=False)  # the meta-learned initialization
    trained_on: TrainingData | None = field(default=None, repr=False)
    fitted: Fitted | None = field(default=None, repr=False)
    search_trials: int = 0  # Optuna trials on meta-validation episodes before meta-training
    searched: SearchResult | None = field(default=None, repr=False)
    floor_check: Mapping[str, Any] | None = field(default=None, repr=False)  # see ``keep_floor_if_better``
    _head: nn.Module | None = field(default=None, repr=False)

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "hidden": self.hidden, "inner_steps": self.inner_steps, "inner_lr": self.inner_lr,
                "first_order": self.first_order, "head_init": self.head_init, "body": "residual, identity init",
                "center": self.center, "meta_train": vars(self.loop),
                "backbone": self.featurize.description, "features": self.featurize.key,
                **({"meta_val": self.fitted.to_dict()} if self.fitted and self.fitted.curve else {}),
                **({"search": self.searched.to_dict()} if self.searched else {}),
                **({"floor_check": dict(self.floor_check)} if self.floor_check else {}),
                **({"meta_train_data": self.trained_on.to_dict()} if self.trained_on else {})}

    @property
    def eval_steps(self) -> int:
        """Inner steps at evaluation: 0 when meta-validation kept the floor (``keep_floor_if_better``)."""
        return 0 if self.floor_check and self.floor_check["kept"] == "floor" else self.inner_steps

    def initial(self, dim: int) -> Params:
        """The head for ``dim``-dimensional features and its initial parameters (the body is the identity)."""
        self._head = head = network(dim, self.hidden, self.n_way)
        init = init_params(head, generator(self.seed, self.name, "init"))
        if self.head_init == "proto":  # the output layer comes from each episode's support: not meta-learned
            init = {k: v for k, v in init.items() if not k.startswith(output_layer(head))}
        return init

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        self.n_way = self.n_way or len(episodes[0].labels)
        tune(self, search_space, episodes)
        init = self.initial(self.featurize(episodes[0].support[:1]).shape[-1])
        head = self._head
        assert head is not None
        loss = lambda p, batch: meta_loss(head, p, batch, self.inner_steps, self.inner_lr,  # noqa: E731
                                          self.first_order, self.head_init)
        accuracy = episode_accuracy(lambda p, a: functional_call(head, adapt_params(
            head, p, a[0], a[1], self.inner_steps, self.inner_lr, self.head_init), (a[2],)))
        config = {"hidden": self.hidden, "n_way": self.n_way, "inner_steps": self.inner_steps,
                  "inner_lr": self.inner_lr, "first_order": self.first_order, "head_init": self.head_init,
                  "body": "residual-identity"}
        self.fitted = meta_fit(self.name, init, loss, episodes, self.featurize, self.loop, self.seed, config,
                               center=self.center, accuracy=accuracy, cache=self.cache, progress=self.progress)
        self.params = self.fitted.params
        self.trained_on = TrainingData.of(episodes) if self.loop.steps else None  # 0 steps: learned nothing
        self.keep_floor_if_better(init, episodes)

    def keep_floor_if_better(self, init: Params, episodes: Sequence[Episode]) -> None:
        """Early stopping keeps the best outer step, step 0 included, but every step runs the inner loop, and the
        inner loop alone can fall below ProtoNet (a fixed ``inner_lr`` on features whose scale the loop does not
        know). So the floor itself, the identity body with 0 inner steps (= ProtoNet on the episode's features), is
        one more candidate, scored on the same meta-validation episodes: when it is strictly better, the learner is
        evaluated as that floor and says so (``floor_check.kept``). Meta-validation only, never the evaluated task."""
        if self.head_init != "proto" or not self.fitted or not self.fitted.curve:
            return
        head = self._head
        assert head is not None
        val = episode_arrays(self.featurize, [ep for ep in episodes if is_validation(ep)], self.center)
        floor = episode_accuracy(lambda p, a: functional_call(head, adapt_params(
            head, p, a[0], a[1], 0, self.inner_lr, self.head_init), (a[2],)))(init, val)
        best = max(acc for _, acc in self.fitted.curve)
        self.floor_check = {"floor_meta_val_accuracy": round(floor, 6), "best_meta_val_accuracy": round(best, 6),
                            "kept": "floor" if floor > best else "meta-trained"}
        if floor > best:
            self.params = {k: v.detach().clone() for k, v in init.items()}

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "MAMLAdapted":
        if self.params is None or self._head is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        if len(labels) != self.n_way:
            raise ValueError(f"{self.name} was meta-trained for {self.n_way}-way episodes, got {len(labels)} labels")
        xs = self.featurize(support)
        c = support_center(xs, self.center)
        adapted = adapt_params(self._head, self.params, normalized(xs, c), label_index(support, labels),
                               self.eval_steps, self.inner_lr, self.head_init)
        return MAMLAdapted(self, adapted, tuple(labels), c)


@dataclass(frozen=True)
class MAMLAdapted:
    learner: MAML
    params: Params
    labels: tuple[str, ...]
    center: torch.Tensor | None = None

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        head = self.learner._head
        assert head is not None
        xq = normalized(self.learner.featurize(queries), self.center)
        out = torch.log_softmax(functional_call(head, self.params, (xq,)), dim=-1)
        return row_predictions(queries, self.labels, out)


def search_space(trial: Any) -> dict[str, Any]:
    """MAML's and FOMAML's search space: inner steps (0: ProtoNet on the learned body) and learning rate, the
    residual branch's width, the outer learning rate and length (early stopping picks the step)."""
    return {"inner_steps": trial.suggest_categorical("inner_steps", [0, 1, 3, 5]),
            "inner_lr": trial.suggest_float("inner_lr", 1e-2, 1.0, log=True),
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
            "loop.lr": trial.suggest_float("loop.lr", 1e-4, 1e-2, log=True),
            "loop.steps": trial.suggest_categorical("loop.steps", [150, 300, 600])}


OPTIONS = OptionSpec(MAML, ("hidden", "inner_steps", "inner_lr", "head_init", "loop"), prefix="maml")


def _make(ctx: MethodContext, first_order: bool) -> MAML:
    return MAML(features_from(ctx), first_order=first_order, seed=ctx.seed, name="fomaml" if first_order else "maml",
                progress=ctx.progress, **meta_options(ctx), **ctx.learner_options(OPTIONS))


TRAINS = Capabilities(meta_trains=True)
register("maml", options=OPTIONS, capabilities=TRAINS)(lambda ctx: _make(ctx, first_order=False))
register("fomaml", options=OPTIONS, capabilities=TRAINS)(lambda ctx: _make(ctx, first_order=True))
