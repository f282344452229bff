"""Memory-augmented neural network (Santoro et al. 2016): an LSTM controller with an external memory.

At step t the controller sees x_t with the one-hot label of step t−1, so it must bind an item to its label in
memory and retrieve it when a similar item comes back. Reads are cosine content-based (softmax over slots with a
learned key strength, as in the NTM) on the memory before this step's write, so an item never retrieves its own
key; writes follow Least-Recently-Used Access: a learned gate mixes the previous read weights with the least-used
slots, which are cleared first. The support items are shown in order with their labels, one more step carries the
last support label, and each query is then predicted from that state on its own, so a query's prediction depends
neither on the other queries nor on their order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import nn
from torch.func import functional_call

from iclkit.learners import register
from iclkit.learners.base import MethodContext, classification_prediction
from iclkit.metatrain import generator, label_index
from iclkit.types import Episode, Example, Prediction

from ._common import Arrays, Featurizer, OuterLoop, Params, features_from, loop_from, meta_fit


class State(NamedTuple):
    h: torch.Tensor  # [B, H]
    c: torch.Tensor  # [B, H]
    memory: torch.Tensor  # [B, N, M]
    read_w: torch.Tensor  # [B, R, N]
    usage: torch.Tensor  # [B, N]
    reads: torch.Tensor  # [B, R, M]


class MANNNet(nn.Module):
    """The controller and its heads; weights always arrive through functional_call (built on the meta device)."""

    def __init__(self, dim: int, n_way: int, hidden: int, slots: int, width: int, heads: int, gamma: float = 0.95):
        super().__init__()
        self.n_way, self.slots, self.width, self.heads, self.gamma = n_way, slots, width, heads, gamma
        kw = {"device": "meta"}
        self.cell = nn.LSTMCell(dim + n_way + heads * width, hidden, **kw)
        self.key = nn.Linear(hidden, heads * width, **kw)
        self.strength = nn.Linear(hidden, heads, **kw)
        self.gate = nn.Linear(hidden, heads, **kw)
        self.out = nn.Linear(hidden + heads * width, n_way, **kw)

    def initial(self, batch: int, dtype: torch.dtype) -> State:
        z = lambda *s: torch.zeros(*s, dtype=dtype)  # noqa: E731
        read_w = z(batch, self.heads, self.slots)
        return State(z(batch, self.cell.hidden_size), z(batch, self.cell.hidden_size),
                     torch.full((batch, self.slots, self.width), 1e-6, dtype=dtype), read_w, z(batch, self.slots),
                     z(batch, self.heads, self.width))

    def forward(self, x: torch.Tensor, prev_label: torch.Tensor, s: State) -> tuple[torch.Tensor, State]:
        h, c = self.cell(torch.cat([x, prev_label, s.reads.flatten(1)], -1), (s.h, s.c))
        key = torch.tanh(self.key(h)).view(-1, self.heads, self.width)
        # Read from the memory as it was before this step's write, so an item never retrieves its own key.
        sim = nn.functional.cosine_similarity(key.unsqueeze(2), s.memory.unsqueeze(1), dim=-1, eps=1e-6)
        beta = 1 + nn.functional.softplus(self.strength(h)).unsqueeze(-1)
        read_w = torch.softmax(beta * sim, dim=-1)
        reads = read_w @ s.memory
        # LRU access: clear the least-used slots, then write to a gated mix of last reads and those slots.
        least = torch.zeros_like(s.usage).scatter(1, s.usage.topk(self.heads, largest=False).indices, 1.0)
        alpha = torch.sigmoid(self.gate(h)).unsqueeze(-1)  # [B, R, 1]
        write_w = alpha * s.read_w + (1 - alpha) * least.unsqueeze(1) / self.heads
        memory = s.memory * (1 - least).unsqueeze(-1) + write_w.transpose(1, 2) @ key
        usage = self.gamma * s.usage + read_w.sum(1) + write_w.sum(1)
        logits = self.out(torch.cat([h, reads.flatten(1)], -1))
        return logits, State(h, c, memory, read_w, usage, reads)


def run_episode(net: MANNNet, params: Params, xs: torch.Tensor, ys: torch.Tensor,
                xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Support logits [B, T, n_way] (each predicted before its label is shown) and query logits [B, Q, n_way]."""
    b, t, _ = xs.shape
    onehot = nn.functional.one_hot(ys, net.n_way).to(xs.dtype)
    prev = torch.cat([torch.zeros_like(onehot[:, :1]), onehot], 1)  # label of step t−1 (none at t=0)
    state = net.initial(b, xs.dtype)
    support_logits = []
    for step in range(t):
        logit, state = functional_call(net, params, (xs[:, step], prev[:, step], state))
        support_logits.append(logit)
    _, state = functional_call(net, params, (torch.zeros_like(xs[:, 0]), prev[:, t], state))
    q = xq.shape[1]
    tile = State(*(v.repeat_interleave(q, 0) for v in state))
    query_logits, _ = functional_call(net, params, (xq.reshape(b * q, -1), torch.zeros(b * q, net.n_way,
                                                                                     dtype=xs.dtype), tile))
    stacked = torch.stack(support_logits, 1) if support_logits else xs.new_zeros(b, 0, net.n_way)
    return stacked, query_logits.view(b, q, net.n_way)


def episode_loss(net: MANNNet, params: Params, batch: Sequence[Arrays]) -> torch.Tensor:
    """Cross-entropy over every support step and every query, episodes of equal shape run as one batch."""
    groups: dict[tuple[int, int], list[Arrays]] = {}
    for a in batch:
        groups.setdefault((a[0].shape[0], a[2].shape[0]), []).append(a)
    total, count = torch.zeros(()), 0
    for group in groups.values():
        xs, ys, xq, yq = (torch.stack(parts) for parts in zip(*group))
        sl, ql = run_episode(net, params, xs, ys, xq)
        total = total + nn.functional.cross_entropy(sl.flatten(0, 1), ys.flatten(), reduction="sum")
        total = total + nn.functional.cross_entropy(ql.flatten(0, 1), yq.flatten(), reduction="sum")
        count += ys.numel() + yq.numel()
    return total / count


def presentation_accuracy(net: MANNNet, params: Params, arrays: Sequence[Arrays], n_max: int = 10) -> list[float]:
    """Accuracy on the support steps by how often that class was shown before (1st, 2nd, ... presentation)."""
    hits = torch.zeros(n_max)
    seen = torch.zeros(n_max)
    with torch.no_grad():
        for xs, ys, xq, _ in arrays:
            sl, _ = run_episode(net, params, xs[None], ys[None], xq[None])
            count: dict[int, int] = {}
            for step, (y, pred) in enumerate(zip(ys.tolist(), sl[0].argmax(-1).tolist())):
                n = count.get(y, 0)
                count[y] = n + 1
                if n < n_max:
                    hits[n] += pred == y
                    seen[n] += 1
    return [float(h / s) for h, s in zip(hits, seen) if s > 0]


def init_params(net: nn.Module, g: torch.Generator) -> Params:
    """U(±1/sqrt(fan)) like torch's defaults, drawn from ``g``; output layer starts at zero (uniform guesses)."""
    out = {}
    for name, p in net.named_parameters():
        module = net.get_submodule(name.rsplit(".", 1)[0])
        fan = getattr(module, "hidden_size", None) or module.in_features
        out[name] = (torch.rand(p.shape, generator=g) * 2 - 1) / fan ** 0.5
        if name.startswith("out."):
            out[name] = torch.zeros(p.shape)
    return out


@dataclass
class MANN:
    featurize: Featurizer
    n_way: int = 0  # 0: taken from the meta-training episodes
    hidden: int = 128
    slots: int = 64
    width: int = 40
    heads: int = 2
    loop: OuterLoop = OuterLoop(steps=300, lr=1e-2, meta_batch=8)
    seed: int = 0
    cache: bool = True
    progress: bool = True
    name: str = "mann"
    params: Params | None = field(default=None, repr=False)
    _net: MANNNet | None = field(default=None, repr=False)

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "hidden": self.hidden, "slots": self.slots, "width": self.width,
                "heads": self.heads, "meta_train": vars(self.loop), "features": self.featurize.key}

    def net(self, dim: int) -> MANNNet:
        if self._net is None:
            self._net = MANNNet(dim, self.n_way, self.hidden, self.slots, self.width, self.heads)
        return self._net

    def meta_train(self, episodes: Sequence[Episode]) -> None:
        self.n_way = self.n_way or len(episodes[0].labels)
        net = self.net(self.featurize(episodes[0].support[:1]).shape[-1])
        config = {"hidden": self.hidden, "slots": self.slots, "width": self.width, "heads": self.heads,
                  "n_way": self.n_way}
        self.params = meta_fit(self.name, init_params(net, generator(self.seed, self.name, "init")),
                               lambda p, batch: episode_loss(net, p, batch), episodes, self.featurize, self.loop,
                               self.seed, config, cache=self.cache, progress=self.progress)

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "MANNAdapted":
        if self.params is None or self._net is None:
            raise RuntimeError(f"{self.name}: meta_train() must run before adapt()")
        if len(labels) != self.n_way:
            raise ValueError(f"{self.name} was meta-trained for {self.n_way}-way episodes, got {len(labels)} labels")
        return MANNAdapted(self, self.featurize(support), label_index(support, labels), tuple(labels))


@dataclass(frozen=True)
class MANNAdapted:
    """The support sequence; each query is run from the state it leaves (recomputed: the state is cheap)."""

    learner: MANN
    support: torch.Tensor
    support_labels: torch.Tensor
    labels: tuple[str, ...]

    @torch.no_grad()
    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        m = self.learner
        assert m.params is not None and m._net is not None
        _, ql = run_episode(m._net, m.params, self.support[None], self.support_labels[None], m.featurize(queries)[None])
        out = torch.log_softmax(ql[0], -1)
        return [classification_prediction(q, self.labels, dict(zip(self.labels, row.tolist())))
                for q, row in zip(queries, out)]


@register("mann")
def _make(ctx: MethodContext) -> MANN:
    o = ctx.options
    return MANN(features_from(ctx), hidden=int(o.get("mann_hidden", 128)),
                slots=int(o.get("mann_slots", 64)), width=int(o.get("mann_width", 40)),
                heads=int(o.get("mann_heads", 2)), loop=loop_from(ctx, "mann", OuterLoop(300, 1e-2, 8)),
                seed=ctx.seed, progress=bool(o.get("progress", True)))
