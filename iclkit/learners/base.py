"""The one protocol every method implements, ICL and baselines alike.

``adapt(support, labels)`` returns a new ``Adapted`` object holding everything learned from the support set, so
nothing leaks from one episode to the next; ``Adapted.predict(queries)`` scores the queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

from iclkit.learners.options import OptionSpec, run_wide
from iclkit.types import Episode, Example, Prediction

T = TypeVar("T")


@runtime_checkable
class Adapted(Protocol):
    """What a learner knows after seeing one episode's support set."""

    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        """One prediction per query, in order; a query's prediction never depends on the other queries."""
        ...


@runtime_checkable
class Learner(Protocol):
    """A few-shot method. ``adapt`` returns a new object, so nothing learned on one episode leaks into the next."""

    name: str

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> Adapted:
        """Learn from the support set (in demonstration order) of an episode whose classes are ``labels``."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """Settings that move a score (recorded in the manifest), including ``backbone``: the model or feature
        space in words (e.g. ``smollm2-135m-instruct`` or ``smollm2-135m-instruct layer -1 mean``)."""
        ...


@runtime_checkable
class MetaLearner(Learner, Protocol):
    """A learner trained on episodes before it sees the evaluation episodes."""

    def meta_train(self, episodes: Sequence[Episode]) -> None: ...


@dataclass(frozen=True)
class Capabilities:
    """What a learner needs and can do; the runner and the summaries read only this, never a method's name.

    ``min_shots``: fewest demonstrations per class it can adapt to (0-shot episodes are skipped below it).
    ``open_answers``: it can answer open-answer (generation) tasks, which have no label set.
    ``batches_episodes``: it has ``predict_episodes(episodes)`` and ``episodes_per_call()``, so the runner hands
    it several episodes per call (an LM batches their queries together); results equal one episode at a time.
    ``query_fields``: numeric per-query ``Prediction.extra`` fields the summary averages (e.g. ``label_mass``).
    ``variants``: method names (``<name>+<variant>``, e.g. calibrations) that one instance computes from the same
    pass (``MultiOutput``): the runner builds it once for every requested name in this tuple, with
    ``MethodContext.outputs`` naming them, and records one result per name, so the queries are scored once.
    ``prompted``: it renders the run's prompt (``MethodContext.get_prompt``); the runner runs it once per prompt of
    the task, on the same episodes, and records the prompt (name and hash) with each result.
    ``order_sensitive``: its predictions can depend on the order of the demonstrations (a prompt, a sequence model),
    so ``--orders P`` runs it under P permutations of each support set; an order-invariant learner (a set function:
    prototypes, nearest neighbours, a fitted classifier) runs the drawn order only and is reported as invariant.
    ``meta_trains``: it learns from meta-training episodes (``MetaLearner.meta_train``) drawn under the task's
    protocol (``iclkit.protocols``). True: the runner resolves their sources and draws them when the run is planned,
    before any model is loaded, so a run that cannot be served fails first; False: never meta-trained (a
    ``MetaLearner`` with nothing to learn, e.g. plain ProtoNet); None: whether the built learner is a
    ``MetaLearner`` (its sources are then resolved once every learner is built, still before any episode runs).
    """

    min_shots: int = 1
    open_answers: bool = False
    batches_episodes: bool = False
    query_fields: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    prompted: bool = False
    order_sensitive: bool = False
    meta_trains: bool | None = None


EpisodeInput = tuple[Sequence[Example], Sequence[str], Sequence[Example]]  # (support, labels, queries)


@runtime_checkable
class MultiOutput(Protocol):
    """A learner whose capabilities list ``variants``: one scoring pass yields several named outputs."""

    def predict_outputs(self, episodes: Sequence[EpisodeInput]) -> list[dict[str, list[Prediction]]]:
        """For each ``(support, labels, queries)``: output name → one prediction per query, in order. Every output
        comes from the same scores (plus the few extra requests a variant needs); no query is scored twice. An
        output may be transductive (its ``describe_output`` says so): a query's prediction then depends on the
        episode's other queries, which ``Adapted.predict`` otherwise never does."""
        ...

    def describe_output(self, name: str) -> Mapping[str, Any]:
        """``describe()`` for one output (e.g. with its calibration), recorded in the manifest under its name."""
        ...


@dataclass
class MethodContext:
    """What a learner factory may use: the task, the run's seed, the options, and lazily the LM and prompt.

    ``embeddings`` holds the run's embedding caches (one per encoder), so the baselines of one run share vectors in
    memory and nothing outlives the run. ``outputs``: for a learner with ``variants``, the names the run asks it
    for. ``episodes``: the evaluation episodes it will be handed, only so that a factory can refuse an option that
    no episode can satisfy before anything runs (e.g. more demonstrations per query than a support set holds).
    """

    task: Any  # TaskData
    seed: int
    options: Mapping[str, Any] = field(default_factory=dict)
    get_lm: Callable[[], Any] | None = None
    get_prompt: Callable[[], Any] | None = None
    train_episodes: Callable[[], Sequence[Episode]] | None = None
    embeddings: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    outputs: tuple[str, ...] = ()
    episodes: Sequence[Episode] = ()

    def learner_options(self, spec: OptionSpec) -> dict[str, Any]:
        """Keyword arguments for a learner from its option spec (typed, defaults from the learner class)."""
        return spec.resolve(self.options)

    def run_wide(self, cls: type[T]) -> T:
        """A run-wide option group (``FeatureOptions``, ``MetaTrainOptions``)."""
        return run_wide(cls, self.options)


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
