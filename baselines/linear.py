"""Linear probe: multinomial logistic regression fit on the support set alone (no meta-learning).

The floor every meta-learner must beat. L2-regularized, solved to convergence with L-BFGS, so the fit is
deterministic and independent of example order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from iclkit.learners import register
from iclkit.learners.base import MethodContext, classification_prediction
from iclkit.metatrain import label_index
from iclkit.types import Example, Prediction

from ._common import Featurizer, features_from


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_way: int, l2: float, max_iter: int = 100) -> torch.Tensor:
    """Weights [dim + 1, n_way] minimizing mean cross-entropy + l2/2 · ‖W‖² (bias unpenalized)."""
    x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    w = torch.zeros(x.shape[1], n_way, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w, y) + 0.5 * l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


@dataclass(frozen=True)
class Linear:
    featurize: Featurizer
    l2: float = 1e-2
    name: str = "linear"

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "l2": self.l2, "features": self.featurize.key}

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "LinearAdapted":
        w = fit_logistic(self.featurize(support), label_index(support, labels), len(labels), self.l2)
        return LinearAdapted(self, w, tuple(labels))


@dataclass(frozen=True)
class LinearAdapted:
    learner: Linear
    weights: torch.Tensor
    labels: tuple[str, ...]

    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        x = self.learner.featurize(queries).double()
        out = torch.log_softmax(x @ self.weights[:-1] + self.weights[-1], dim=-1)
        return [classification_prediction(q, self.labels, dict(zip(self.labels, row.tolist())))
                for q, row in zip(queries, out)]


@register("linear")
def _make(ctx: MethodContext) -> Linear:
    return Linear(features_from(ctx), l2=float(ctx.options.get("linear_l2", 1e-2)))
