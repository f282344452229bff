"""Linear probe: multinomial logistic regression fit on the support set alone (no meta-learning).

The floor every meta-learner must beat: scikit-learn's L2-regularized LogisticRegression, solved to convergence
with L-BFGS, so the fit is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import MethodContext, row_predictions
from iclkit.metatrain import label_index
from iclkit.types import Example, Prediction

from iclkit.baselines.common import Center, Featurizer, center_from, features_from, normalized, support_center


@dataclass(frozen=True)
class OneClass:
    """The fit when the support shows a single class (e.g. under ``--labels random``): that class, probability 1 —
    the limit of the regularized fit, which scikit-learn refuses to compute."""

    label: int

    @property
    def classes_(self) -> np.ndarray:
        return np.array([self.label])

    def predict_log_proba(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 1))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_way: int, c: float) -> LogisticRegression | OneClass:
    """L2-regularized multinomial logistic regression (L-BFGS to convergence, deterministic)."""
    if len(set(y.tolist())) < 2:
        return OneClass(int(y[0]))
    with threadpool_limits(1):  # BLAS threads only add contention on a problem this small
        return LogisticRegression(C=c, max_iter=1000, tol=1e-6).fit(x.double().numpy(), y.numpy())


@dataclass(frozen=True)
class Linear:
    featurize: Featurizer
    c: float = 1.0  # inverse L2 strength, scikit-learn's C
    center: Center = "support"
    name: str = "linear"

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "C": self.c, "center": self.center, "backbone": self.featurize.description,
                "features": self.featurize.key}

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "LinearAdapted":
        xs = self.featurize(support)
        center = support_center(xs, self.center)
        model = fit_logistic(normalized(xs, center), label_index(support, labels), len(labels), self.c)
        return LinearAdapted(self, model, tuple(labels), center)


@dataclass(frozen=True)
class LinearAdapted:
    learner: Linear
    model: LogisticRegression | OneClass
    labels: tuple[str, ...]
    center: torch.Tensor | None = None

    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        x = normalized(self.learner.featurize(queries), self.center)
        logp = self.model.predict_log_proba(x.double().numpy())
        out = np.full((len(queries), len(self.labels)), -np.inf)
        out[:, self.model.classes_] = logp  # a class absent from the support gets probability 0
        return row_predictions(queries, self.labels, out)


OPTIONS = OptionSpec(Linear, ("c",), prefix="linear")


@register("linear", options=OPTIONS)
def _make(ctx: MethodContext) -> Linear:
    return Linear(features_from(ctx), center=center_from(ctx), **ctx.learner_options(OPTIONS))
