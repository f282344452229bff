"""The one protocol every method implements, ICL and baselines alike.

``adapt(support, labels)`` returns a new ``Adapted`` object holding everything learned from the support set, so
nothing leaks from one episode to the next; ``Adapted.predict(queries)`` scores the queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from iclkit.types import Episode, Example, Prediction


@runtime_checkable
class Adapted(Protocol):
    def predict(self, queries: Sequence[Example]) -> list[Prediction]: ...


@runtime_checkable
class Learner(Protocol):
    name: str

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> Adapted: ...

    def describe(self) -> Mapping[str, Any]:
        """Settings that move a score (recorded in the manifest)."""
        ...


@runtime_checkable
class MetaLearner(Learner, Protocol):
    def meta_train(self, episodes: Sequence[Episode]) -> None: ...


@dataclass
class MethodContext:
    """What a learner factory may use: the task, the run's seed, the method options, and lazily the LM."""

    task: Any  # TaskData
    seed: int
    options: Mapping[str, Any] = field(default_factory=dict)
    get_lm: Callable[[], Any] | None = None
    get_prompt: Callable[[], Any] | None = None
    cache_dir: str | None = None
    train_episodes: Callable[[], Sequence[Episode]] | None = None


def softmax(scores: Mapping[str, float]) -> dict[str, float]:
    """Probabilities from per-label scores (log-space, numerically stable)."""
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def argmax_label(scores: Mapping[str, float], labels: Sequence[str]) -> str:
    """Highest-scoring label; ties go to the label listed first."""
    return max(labels, key=lambda lab: (scores[lab], -labels.index(lab)))


def classification_prediction(query: Example, labels: Sequence[str], scores: Mapping[str, float],
                              extra: Mapping[str, Any] | None = None) -> Prediction:
    predicted = argmax_label(scores, labels)
    return Prediction(query_id=query.id, gold=query.label, predicted=predicted, correct=predicted == query.label,
                      scores=dict(scores), probs=softmax(scores), extra=dict(extra or {}))


def row_predictions(queries: Sequence[Example], labels: Sequence[str], rows: Any) -> list[Prediction]:
    """One prediction per query from a [n_query, n_labels] table of scores (tensor, array or nested list)."""
    return [classification_prediction(q, labels, dict(zip(labels, row.tolist() if hasattr(row, "tolist") else row)))
            for q, row in zip(queries, rows)]
