"""What the sequence meta-learners (MANN, the in-context transformer) share: episodes stacked by shape, projected and
jittered inputs, and one learner class that meta-trains a pure function of a flat parameter dict (early-stopped on
meta-validation episodes) and reads the support set in context at prediction time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import torch

from iclkit.learners.base import row_predictions
from iclkit.metatrain import TrainingData, generator, is_validation, label_index
from iclkit.types import Episode, Example, Prediction

from iclkit.baselines.common import (Arrays, Center, Featurizer, Fitted, OuterLoop, Params, Bottleneck,
                                     episode_arrays, meta_fit, normalized, support_center)
from iclkit.baselines.search import SearchResult, tune


def stacked(batch: Sequence[Arrays]) -> list[Arrays]:
    """Episodes of equal support and query sizes stacked into one batch each: ([B, T, d], [B, T], [B, Q, d], [B, Q])."""
    groups: dict[tuple[int, int], list[Arrays]] = {}
    for a in batch:
        groups.setdefault((a[0].shape[0], a[2].shape[0]), []).append(a)
    return [tuple(torch.stack(parts) for parts in zip(*group)) for group in groups.values()]  # type: ignore[misc]


@dataclass
class SequenceLearner:
    """Base of the learners that take the support set as input: subclasses define the network's shape and, as
    functions of (shape, params, ...), its initial parameters, training loss and query logits; this class projects the
    inputs, jitters them during meta-training, runs the shared (cached) outer loop, and turns query logits into
    predictions."""

    featurize: Featurizer
    n_way: int = 0  # 0: taken from the meta-training episodes
    # principal directions of the inputs kept (see Bottleneck). 0, every direction: the only setting under which the
    # projection changes no nearest neighbour, so the learner can represent its floor (kNN) on any evaluated task —
    # a design rule, not a measurement. Fewer directions are cheaper (one outer step over 32 episodes: ~0.4 s for
    # MANN at 64 directions, ~2 s at 384, 2 cores) but a basis fit on other tasks' texts can drop the directions the
    # evaluated task needs (knn-bottleneck rows, docs/learners-and-protocols.md "Meta-learners against their floors"); --set meta_search=N
    # tries 0, 16, …, 128 on meta-validation episodes.
    input_dim: int = 0
    input_noise: float = 0.5  # std of Gaussian noise added to meta-training inputs (projected units)
    whiten: bool = False  # scale every direction to unit variance (PCA whitening) instead of one global scale
    center: Center = "support"
    loop: OuterLoop = OuterLoop()
    seed: int = 0
    cache: bool = True
    progress: bool = True
    name: str = ""
    params: Params | None = field(default=None, repr=False)
    shape: Any = field(default=None, repr=False)  # the subclass's NamedTuple, set by meta_train
    trained_on: TrainingData | None = field(default=None, repr=False)
    fitted: Fitted | None = field(default=None, repr=False)
    search_trials: int = 0  # Optuna trials on meta-validation episodes before meta-training
    searched: SearchResult | None = field(default=None, repr=False)
    _inputs: Bottleneck | None = field(default=None, repr=False)

    # -- what a subclass defines -----------------------------------------------------------------------------------

    def make_shape(self, dim: int) -> NamedTuple:
        raise NotImplementedError

    def init_params(self, shape: Any, g: torch.Generator) -> Params:
        raise NotImplementedError

    def loss(self, shape: Any, params: Params, batch: Sequence[Arrays]) -> torch.Tensor:
        raise NotImplementedError

    def query_logits(self, shape: Any, params: Params, xs: torch.Tensor, ys: torch.Tensor,
                     xq: torch.Tensor) -> torch.Tensor:
        """[B, Q, n_way] for supports [B, T, d] with labels [B, T] and queries [B, Q, d]."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The subclass's own settings, for ``describe`` and the weights key."""
        return {}

    def space(self, trial: Any) -> dict[str, Any]:
        """The search space (``iclkit.baselines.search``): the shared input settings and outer learning rate, plus
        the subclass's own (``own_space``)."""
        return {"input_dim": trial.suggest_categorical("input_dim", [0, 16, 32, 64, 128]),
                "input_noise": trial.suggest_float("input_noise", 0.0, 1.0),
                "loop.lr": trial.suggest_float("loop.lr", 1e-4, 3e-2, log=True), **self.own_space(trial)}

    def own_space(self, trial: Any) -> dict[str, Any]:
        return {}

    # -- shared ----------------------------------------------------------------------------------------------------

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, **self.settings(), "input_dim": self.input_dim, "input_noise": self.input_noise,
                "inputs": "pca-whitened" if self.whiten else "pca-projection",
                "center": self.center, "meta_train": vars(self.loop), "backbone": self.featurize.description,
                "features": self.featurize.key,
                **({"meta_val": self.fitted.to_dict()} if self.fitted and self.fitted.curve else {}),
                **({"search": self.searched.to_dict()} if self.searched else {}),
                **({"meta_train_data": self.trained_on.to_dict()} if self.trained_on else {})}

    def weights_config(self, shape: NamedTuple) -> dict[str, Any]:
        return {**shape._asdict(), "inputs": "pca-whitened" if self.whiten else "pca-projection",
                "input_dim": self.input_dim,
                "input_noise": self.input_noise}

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        self.n_way = self.n_way or len(episodes[0].labels)
        tune(self, self.space, episodes)
        train = [ep for ep in episodes if not is_validation(ep)]
        self._inputs = inputs = Bottleneck.fit(episode_arrays(self.featurize, train, self.center), self.input_dim,
                                               self.whiten)
        self.shape = shape = self.make_shape(inputs.dim)
        noise = generator(self.seed, self.name, "input-noise")

        def loss(p: Params, batch: Sequence[Arrays]) -> torch.Tensor:
            if self.input_noise:  # fresh Gaussian noise on every item each time it is shown
                jitter = lambda x: x + self.input_noise * torch.randn(x.shape, generator=noise)  # noqa: E731
                batch = [(jitter(xs), ys, jitter(xq), yq) for xs, ys, xq, yq in batch]
            return self.loss(shape, p, batch)

        def accuracy(p: Params, arrays: Sequence[Arrays]) -> float:
            """Mean per-episode query accuracy, episodes of equal shape run as one batch."""
            with torch.no_grad():
                accs = [(self.query_logits(shape, p, xs, ys, xq).argmax(-1) == yq).float().mean(1)
                        for xs, ys, xq, yq in stacked(arrays)]
            return float(torch.cat(accs).mean())

        self.fitted = meta_fit(self.name, self.init_params(shape, generator(self.seed, self.name, "init")), loss,
                               episodes, self.featurize, self.loop, self.seed, self.weights_config(shape),
                               center=self.center, accuracy=accuracy, inputs=inputs,
                               cache=self.cache, progress=self.progress)
        self.params = self.fitted.params
        self.trained_on = TrainingData.of(episodes) if self.loop.steps else None  # 0 steps: learned nothing

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "SequenceAdapted":
        if self.params is None or self._inputs is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        if len(labels) != self.n_way:
            raise ValueError(f"{self.name} was meta-trained for {self.n_way}-way episodes, got {len(labels)} labels")
        xs = self.featurize(support)
        c = support_center(xs, self.center)
        return SequenceAdapted(self, self.view(xs, c), label_index(support, labels), tuple(labels), c)

    def episode_inputs(self, episodes: Sequence[Episode]) -> list[Arrays]:
        """What the network reads for each episode (normalised with its support, projected), with label indices."""
        assert self._inputs is not None
        w = self._inputs
        return [(w(xs), ys, w(xq), yq) for xs, ys, xq, yq in episode_arrays(self.featurize, episodes, self.center)]

    def view(self, x: torch.Tensor, center: torch.Tensor | None) -> torch.Tensor:
        """What the network reads: the episode-normalised vector, projected."""
        assert self._inputs is not None
        return self._inputs(normalized(x, center))


@dataclass(frozen=True)
class SequenceAdapted:
    """The support sequence, read again with every prediction (the network takes it as input)."""

    learner: SequenceLearner
    support: torch.Tensor
    support_labels: torch.Tensor
    labels: tuple[str, ...]
    center: torch.Tensor | None = None

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        m = self.learner
        assert m.params is not None and m.shape is not None
        logits = m.query_logits(m.shape, m.params, self.support[None], self.support_labels[None],
                                m.view(m.featurize(queries), self.center)[None])
        out = torch.log_softmax(logits[0], -1)
        return row_predictions(queries, self.labels, out)
