"""What the sequence meta-learners (MANN, the in-context transformer) share: episodes stacked by shape, whitened and
jittered inputs, and one learner class that meta-trains a pure function of a flat parameter dict and reads the
support set in context at prediction time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import torch

from iclkit.learners.base import row_predictions
from iclkit.metatrain import TrainingData, generator, label_index
from iclkit.types import Episode, Example, Prediction

from iclkit.baselines.common import Arrays, Featurizer, OuterLoop, Params, Whitened, meta_fit


def stacked(batch: Sequence[Arrays]) -> list[Arrays]:
    """Episodes of equal support and query sizes stacked into one batch each: ([B, T, d], [B, T], [B, Q, d], [B, Q])."""
    groups: dict[tuple[int, int], list[Arrays]] = {}
    for a in batch:
        groups.setdefault((a[0].shape[0], a[2].shape[0]), []).append(a)
    return [tuple(torch.stack(parts) for parts in zip(*group)) for group in groups.values()]  # type: ignore[misc]


@dataclass
class SequenceLearner:
    """Base of the learners that take the support set as input: subclasses define the network's shape and, as
    functions of (shape, params, ...), its initial parameters, training loss and query logits; this class whitens the
    inputs, jitters them during meta-training, runs the shared (cached) outer loop, and turns query logits into
    predictions."""

    featurize: Featurizer
    n_way: int = 0  # 0: taken from the meta-training episodes
    input_dim: int = 32  # PCA-whitened input dimensions (see Whitened)
    input_noise: float = 0.5  # std of Gaussian noise added to meta-training inputs (whitened units)
    loop: OuterLoop = OuterLoop()
    seed: int = 0
    cache: bool = True
    progress: bool = True
    name: str = ""
    params: Params | None = field(default=None, repr=False)
    shape: Any = field(default=None, repr=False)  # the subclass's NamedTuple, set by meta_train
    trained_on: TrainingData | None = field(default=None, repr=False)
    _inputs: Whitened | None = field(default=None, repr=False)

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

    # -- shared ----------------------------------------------------------------------------------------------------

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, **self.settings(), "input_dim": self.input_dim, "input_noise": self.input_noise,
                "meta_train": vars(self.loop), "backbone": self.featurize.description, "features": self.featurize.key,
                **({"meta_train_data": self.trained_on.to_dict()} if self.trained_on else {})}

    def weights_config(self, shape: NamedTuple) -> dict[str, Any]:
        return {**shape._asdict(), "inputs": "pca-whitened", "input_noise": self.input_noise}

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        self.n_way = self.n_way or len(episodes[0].labels)
        self._inputs = inputs = Whitened.fit(self.featurize, episodes, self.input_dim)
        self.shape = shape = self.make_shape(int(inputs.basis.shape[-1]))
        noise = generator(self.seed, self.name, "input-noise")

        def loss(p: Params, batch: Sequence[Arrays]) -> torch.Tensor:
            if self.input_noise:  # fresh Gaussian noise on every item each time it is shown
                jitter = lambda x: x + self.input_noise * torch.randn(x.shape, generator=noise)  # noqa: E731
                batch = [(jitter(xs), ys, jitter(xq), yq) for xs, ys, xq, yq in batch]
            return self.loss(shape, p, batch)

        self.params = meta_fit(self.name, self.init_params(shape, generator(self.seed, self.name, "init")), loss,
                               episodes, inputs, self.loop, self.seed, self.weights_config(shape), cache=self.cache,
                               progress=self.progress)
        self.trained_on = TrainingData.of(episodes) if self.loop.steps else None  # 0 steps: learned nothing

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "SequenceAdapted":
        if self.params is None or self._inputs is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        if len(labels) != self.n_way:
            raise ValueError(f"{self.name} was meta-trained for {self.n_way}-way episodes, got {len(labels)} labels")
        return SequenceAdapted(self, self._inputs(support), label_index(support, labels), tuple(labels))


@dataclass(frozen=True)
class SequenceAdapted:
    """The support sequence, read again with every prediction (the network takes it as input)."""

    learner: SequenceLearner
    support: torch.Tensor
    support_labels: torch.Tensor
    labels: tuple[str, ...]

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        m = self.learner
        assert m.params is not None and m.shape is not None and m._inputs is not None
        logits = m.query_logits(m.shape, m.params, self.support[None], self.support_labels[None],
                                m._inputs(queries)[None])
        out = torch.log_softmax(logits[0], -1)
        return row_predictions(queries, self.labels, out)
