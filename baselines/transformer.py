"""A small transformer meta-trained from scratch to learn in context over embedding sequences (Garg et al. 2022,
Kirsch et al. 2022): the bridge between MANN and LLM in-context learning.

Each support item is one token, its (whitened) embedding concatenated with its one-hot label; each query is one token
with its embedding and no label. Support tokens attend to each other; a query token attends to the support tokens and
to itself only, so a query's prediction depends neither on the other queries nor on their order. There are no
position embeddings: the support is a set. Pre-LayerNorm blocks, written as a pure function of a flat parameter dict
(meta-trained with the shared outer loop, weights cached like every meta-learner's). The class-to-index map is
shuffled per meta-training episode, so the only way to name a query's class is to read the support labels in context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import torch
from torch.nn import functional as F

from iclkit.learners import OptionSpec, register
from iclkit.learners.base import Capabilities, MethodContext

from iclkit.baselines.common import Arrays, OuterLoop, Params, features_from
from iclkit.baselines.sequence import SequenceLearner, stacked


class Shape(NamedTuple):
    dim: int
    n_way: int
    width: int = 64
    layers: int = 2
    heads: int = 4


def init_params(shape: Shape, g: torch.Generator) -> Params:
    """U(±1/sqrt(fan_in)) weights drawn from ``g``, unit LayerNorms, zero biases; the output layer starts at zero."""
    d = shape.width
    u = lambda fan, *s: (torch.rand(*s, generator=g) * 2 - 1) / fan ** 0.5  # noqa: E731
    p = {"embed.weight": u(shape.dim + shape.n_way + 1, shape.dim + shape.n_way + 1, d), "embed.bias": torch.zeros(d)}
    for i in range(shape.layers):
        p |= {f"{i}.ln1.weight": torch.ones(d), f"{i}.ln1.bias": torch.zeros(d),
              f"{i}.qkv.weight": u(d, d, 3 * d), f"{i}.qkv.bias": torch.zeros(3 * d),
              f"{i}.proj.weight": u(d, d, d), f"{i}.proj.bias": torch.zeros(d),
              f"{i}.ln2.weight": torch.ones(d), f"{i}.ln2.bias": torch.zeros(d),
              f"{i}.fc1.weight": u(d, d, 4 * d), f"{i}.fc1.bias": torch.zeros(4 * d),
              f"{i}.fc2.weight": u(4 * d, 4 * d, d), f"{i}.fc2.bias": torch.zeros(d)}
    return p | {"final.weight": torch.ones(d), "final.bias": torch.zeros(d),
                "out.weight": torch.zeros(d, shape.n_way), "out.bias": torch.zeros(shape.n_way)}


def forward(shape: Shape, p: Params, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Query logits [B, Q, n_way] for support [B, T, dim] with labels [B, T] and queries [B, Q, dim]."""
    b, t, _ = xs.shape
    q = xq.shape[1]
    d, h = shape.width, shape.heads
    support = torch.cat([xs, F.one_hot(ys, shape.n_way).to(xs.dtype), xs.new_ones(b, t, 1)], -1)
    query = torch.cat([xq, xq.new_zeros(b, q, shape.n_way + 1)], -1)
    x = torch.cat([support, query], 1) @ p["embed.weight"] + p["embed.bias"]
    allowed = torch.zeros(t + q, t + q, dtype=torch.bool)
    allowed[:, :t] = True  # everyone reads the support
    allowed[t:, t:] = torch.eye(q, dtype=torch.bool)  # a query also reads itself, never another query
    for i in range(shape.layers):
        a = F.layer_norm(x, (d,), p[f"{i}.ln1.weight"], p[f"{i}.ln1.bias"])
        qkv = (a @ p[f"{i}.qkv.weight"] + p[f"{i}.qkv.bias"]).view(b, t + q, 3, h, d // h).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=allowed)
        x = x + attn.transpose(1, 2).reshape(b, t + q, d) @ p[f"{i}.proj.weight"] + p[f"{i}.proj.bias"]
        a = F.layer_norm(x, (d,), p[f"{i}.ln2.weight"], p[f"{i}.ln2.bias"])
        x = x + F.gelu(a @ p[f"{i}.fc1.weight"] + p[f"{i}.fc1.bias"]) @ p[f"{i}.fc2.weight"] + p[f"{i}.fc2.bias"]
    out = F.layer_norm(x[:, t:], (d,), p["final.weight"], p["final.bias"])
    return out @ p["out.weight"] + p["out.bias"]


def episode_loss(shape: Shape, params: Params, batch: Sequence[Arrays]) -> torch.Tensor:
    """Query cross-entropy, episodes of equal shape run as one batch."""
    total, count = torch.zeros(()), 0
    for xs, ys, xq, yq in stacked(batch):
        logits = forward(shape, params, xs, ys, xq)
        total = total + F.cross_entropy(logits.flatten(0, 1), yq.flatten(), reduction="sum")
        count += yq.numel()
    return total / count


@dataclass
class InContextTransformer(SequenceLearner):
    width: int = 64
    layers: int = 2
    heads: int = 4
    loop: OuterLoop = OuterLoop(steps=400, lr=1e-3, meta_batch=32, cosine=True)
    name: str = "transformer"

    def settings(self) -> dict[str, Any]:
        return {"width": self.width, "layers": self.layers, "heads": self.heads}

    def make_shape(self, dim: int) -> Shape:
        return Shape(dim, self.n_way, self.width, self.layers, self.heads)

    init_params = staticmethod(init_params)
    loss = staticmethod(episode_loss)
    query_logits = staticmethod(forward)


OPTIONS = OptionSpec(InContextTransformer, ("width", "layers", "heads", "input_dim", "input_noise", "loop"),
                     prefix="transformer")


# No position embeddings: a permutation of the support permutes the keys a query attends over, which leaves its
# attention output unchanged, so the learner is order-invariant (tests/test_uses.py checks it; measured on AG News and
# SST-2 under 4 orders: the same predictions for every order).
@register("transformer", options=OPTIONS, capabilities=Capabilities(order_sensitive=False))
def _make(ctx: MethodContext) -> InContextTransformer:
    return InContextTransformer(features_from(ctx), seed=ctx.seed, progress=ctx.progress,
                                **ctx.learner_options(OPTIONS))
