"""Gaussian-cluster episodes for sanity-checking a learner: fresh class centres per episode, so only adaptation
to the support set can help (used by the tests; handy for checking a new baseline)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from iclkit.types import Episode, Example


@dataclass
class Lookup:
    """A featurizer over synthetic examples: each example id maps to its vector."""

    key: str = "synthetic"
    description: str = "synthetic Gaussian clusters"
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __call__(self, examples):
        return torch.stack([self.vectors[e.id] for e in examples])


def gaussian_episodes(lookup: Lookup, tag: str, n: int, *, n_way: int = 5, shots: int = 5, n_query: int = 5,
                      dim: int = 16, noise: float = 0.5, seed: int = 0, shuffle_labels: bool = False) -> list[Episode]:
    """``n`` episodes; class centres ~ N(0, I), items ~ N(centre, noise² I)."""
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    labels = tuple(f"c{i}" for i in range(n_way))
    out = []
    for index in range(n):
        centres = torch.randn(n_way, dim, generator=g)
        support, query = [], []
        for c, lab in enumerate(labels):
            for j in range(shots + n_query):
                ex = Example(id=f"{tag}/{index}/{lab}/{j}", fields={"text": f"{tag}/{index}/{lab}/{j}"}, label=lab)
                lookup.vectors[ex.id] = centres[c] + noise * torch.randn(dim, generator=g)
                (support if j < shots else query).append(ex)
        rng.shuffle(support)
        if shuffle_labels:
            perm = [e.label for e in support]
            rng.shuffle(perm)
            support = [Example(e.id, e.fields, lab) for e, lab in zip(support, perm)]
        order = list(labels)
        rng.shuffle(order)  # class-to-index map permuted per episode, like iclkit.metatrain
        out.append(Episode(task=tag, index=index, shots=shots, seed=seed, labels=tuple(order),
                           support=tuple(support), query=tuple(query)))
    return out
