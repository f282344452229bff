"""What the baselines share: features from the run context, episode tensors, and one cached outer training loop."""

from __future__ import annotations

import random
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from iclkit.embeddings import Features, cache_for, encoder_for
from iclkit.learners import FeatureOptions, MethodContext
from iclkit.metatrain import generator, label_index, load_weights, save_weights, weights_dir
from iclkit.types import Episode, Example, content_key, episodes_hash

Params = dict[str, torch.Tensor]
Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # support x, support y, query x, query y


class Featurizer(Protocol):
    """Example → vector; ``key`` names the embedding space (part of every meta-trained weights key), and
    ``description`` says it in words for people (``smollm2-135m-instruct layer -1 mean``)."""

    key: str
    description: str

    def __call__(self, examples: Sequence[Example]) -> torch.Tensor: ...


@dataclass(frozen=True)
class OuterLoop:
    """Meta-training budget: Adam steps, learning rate, episodes per step; ``cosine`` decays the rate to 0."""

    steps: int = 300
    lr: float = 1e-3
    meta_batch: int = 4
    cosine: bool = False


def features_from(ctx: MethodContext) -> Features:
    """The run's embedding space (``FeatureOptions``: embed, embed_layer, pooling), centred on train texts."""
    o = ctx.run_wide(FeatureOptions)
    encoder = encoder_for(o.embed, get_lm=ctx.get_lm, layer=o.embed_layer, pooling=o.pooling)
    feats = Features(cache_for(encoder, ctx.embeddings, progress=ctx.progress))
    train = list(ctx.task.train)
    sample = random.Random(f"center/{ctx.seed}").sample(train, min(len(train), o.center_texts))
    return feats.with_center(sample) if sample else feats


def episode_arrays(featurize: Featurizer, episodes: Sequence[Episode]) -> list[Arrays]:
    """Tensors per episode, embedding all distinct examples in one pass."""
    examples = list({(e.id, content_key(e)): e for ep in episodes for e in (*ep.support, *ep.query)}.values())
    vecs = featurize(examples)
    row = {(e.id, content_key(e)): i for i, e in enumerate(examples)}
    get = lambda xs: vecs[[row[(e.id, content_key(e))] for e in xs]]  # noqa: E731
    return [(get(ep.support), label_index(ep.support, ep.labels), get(ep.query), label_index(ep.query, ep.labels))
            for ep in episodes]


def meta_fit(name: str, init: Params, loss: Callable[[Params, Sequence[Arrays]], torch.Tensor],
             episodes: Sequence[Episode], featurize: Featurizer, loop: OuterLoop, seed: int,
             config: Mapping[str, Any], *, cache: bool = True, progress: bool = True) -> Params:
    """Adam on ``loss`` over random meta-batches of episodes; weights cached by (config, episodes, features)."""
    full = {**dict(config), **asdict(loop), "seed": seed}
    folder = weights_dir(name, full, episodes_hash(list(episodes)), featurize.key)
    if cache and (saved := load_weights(folder)) is not None:
        return saved
    arrays = episode_arrays(featurize, episodes)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in init.items()}
    opt = torch.optim.Adam(params.values(), lr=loop.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, loop.steps) if loop.cosine else None
    gen = generator(seed, name, "meta-batches")
    for _ in tqdm(range(loop.steps), desc=f"meta-train {name}", file=sys.stderr, leave=False, disable=not progress):
        batch = [arrays[int(i)] for i in torch.randint(len(arrays), (loop.meta_batch,), generator=gen)]
        opt.zero_grad()
        loss(params, batch).backward()
        opt.step()
        if sched is not None:
            sched.step()
    trained = {k: v.detach().clone() for k, v in params.items()}
    if cache:
        save_weights(folder, trained, {"method": name, **full, "episodes_hash": episodes_hash(list(episodes)),
                                       "n_episodes": len(episodes), "features": featurize.key})
    return trained


class Whitened:
    """A featurizer whose vectors are projected on the top principal directions of the meta-training items and
    scaled to unit variance per direction (PCA whitening; fit once, then fixed).

    Why: a learned input layer (MANN's controller, the in-context transformer's token embedding) over a few hundred
    meta-training texts in a 384–576-dim space memorizes the training texts instead of learning to use the support
    set (MANN, TREC, MiniLM, 200 episodes over 64 texts per class: 0.97 on training episodes, chance on evaluation
    episodes). A fixed low-dimensional input, more distinct training texts (``--meta-pool``) and Gaussian noise on
    the training inputs (``input_noise``) close that gap: 0.79 on training episodes, 0.72 on evaluation episodes
    (TREC 6-way 4-shot; chance 0.17).
    """

    def __init__(self, inner: Featurizer, mean: torch.Tensor, basis: torch.Tensor):
        self.inner, self.mean, self.basis = inner, mean, basis  # basis: [dim, k], columns scaled by 1/σ
        self.key = inner.key
        self.description = inner.description

    @classmethod
    def fit(cls, inner: Featurizer, episodes: Sequence[Episode], k: int) -> "Whitened":
        x = torch.cat([torch.cat([xs, xq]) for xs, _, xq, _ in episode_arrays(inner, episodes)]).double()
        x = torch.unique(x, dim=0)  # each distinct item once, however many episodes it appears in
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(k, vh.shape[0])
        sd = (s[:k] / max(1, x.shape[0] - 1) ** 0.5).clamp_min(1e-8)
        basis = vh[:k].T / sd
        # A fixed sign per direction (the largest-magnitude entry positive): the same data always gives the same basis.
        basis = basis * torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
        return cls(inner, mean.float(), basis.float())

    def __call__(self, examples: Sequence[Example]) -> torch.Tensor:
        return (self.inner(examples) - self.mean) @ self.basis
