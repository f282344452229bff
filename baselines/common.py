"""What the baselines share: features from the run context, episode tensors, and one cached outer training loop."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from iclkit.embeddings import Features, cache_for, encoder_for
from iclkit.learners import FeatureOptions, MetaTrainOptions, MethodContext
from iclkit.metatrain import generator, is_validation, label_index, load_weights, save_weights, weights_dir
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
    """Meta-training budget: Adam steps, learning rate, episodes per step; ``cosine`` decays the rate to 0.

    With meta-validation episodes (``iclkit.metatrain``), accuracy on them is measured before the first step and
    every ``eval_every`` steps, training stops after ``patience`` measurements without a gain, and the best weights
    are kept (ties go to the earlier step, so step 0 — the learner's floor — wins unless training beats it)."""

    steps: int = 300
    lr: float = 1e-3
    meta_batch: int = 4
    cosine: bool = False
    eval_every: int = 25
    patience: int = 4


@dataclass(frozen=True)
class Fitted:
    """Meta-trained weights and how they were chosen: meta-validation accuracy by step, and the step kept."""

    params: Params
    curve: tuple[tuple[int, float], ...] = ()  # (outer step, mean meta-validation episode accuracy)
    best_step: int | None = None  # None: no meta-validation episodes, the last weights were kept
    steps_run: int = 0  # outer steps taken before the early stop (or the step budget)
    seconds: float | None = None  # wall time of the training that made these weights (kept with cached weights)

    def to_dict(self) -> dict[str, Any]:
        return {"curve": [[s, round(a, 6)] for s, a in self.curve], "best_step": self.best_step,
                "steps_run": self.steps_run, "seconds": None if self.seconds is None else round(self.seconds, 1)}


Accuracy = Callable[[Params, Sequence[Arrays]], float]


def episode_accuracy(logits: Callable[[Params, Arrays], torch.Tensor]) -> Accuracy:
    """Mean per-episode query accuracy from a function giving one episode's query logits."""
    def accuracy(params: Params, arrays: Sequence[Arrays]) -> float:
        with torch.no_grad():
            accs = [float((logits(params, a).argmax(-1) == a[3]).float().mean()) for a in arrays]
        return sum(accs) / len(accs)
    return accuracy


def meta_fit(name: str, init: Params, loss: Callable[[Params, Sequence[Arrays]], torch.Tensor],
             episodes: Sequence[Episode], featurize: Featurizer, loop: OuterLoop, seed: int,
             config: Mapping[str, Any], *, center: "Center" = "none", accuracy: Accuracy | None = None,
             inputs: Callable[[torch.Tensor], torch.Tensor] | None = None, cache: bool = True,
             progress: bool = True) -> Fitted:
    """Adam on ``loss`` over random meta-batches of the meta-training episodes, early-stopped on the
    meta-validation episodes (``is_validation``) by ``accuracy``; weights and curve cached by (config, episodes,
    features). ``inputs`` maps every normalised vector before the learner sees it (a fixed whitening: ``config``
    must name it). The evaluated task never enters: both episode sets come from the learner's own budget."""
    full = {**dict(config), **asdict(loop), "seed": seed, "center": center}
    folder = weights_dir(name, full, episodes_hash(list(episodes)), featurize.key)
    if cache and (saved := load_weights(folder)) is not None:
        params, info = saved
        return Fitted(params, tuple((int(s), float(a)) for s, a in info.get("curve", [])), info.get("best_step"),
                      int(info.get("steps_run", 0)), info.get("seconds"))
    train = [ep for ep in episodes if not is_validation(ep)]
    val = [ep for ep in episodes if is_validation(ep)]
    arrays = episode_arrays(featurize, train, center)
    val_arrays = episode_arrays(featurize, val, center) if val and accuracy is not None else []
    if inputs is not None:
        arrays, val_arrays = ([(inputs(xs), ys, inputs(xq), yq) for xs, ys, xq, yq in a] for a in (arrays, val_arrays))
    start = time.perf_counter()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in init.items()}
    opt = torch.optim.Adam(params.values(), lr=loop.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, loop.steps)) if loop.cosine else None
    gen = generator(seed, name, "meta-batches")
    curve: list[tuple[int, float]] = []
    best: tuple[float, int, Params] | None = None

    def measure(step: int) -> bool:
        """Record meta-validation accuracy at ``step``; False once ``patience`` measurements brought no gain."""
        nonlocal best
        acc = accuracy(params, val_arrays)  # type: ignore[misc]
        curve.append((step, acc))
        if best is None or acc > best[0]:
            best = (acc, step, {k: v.detach().clone() for k, v in params.items()})
        return (step - best[1]) < loop.patience * loop.eval_every

    going = not val_arrays or measure(0)
    steps_run = 0
    bar = tqdm(range(1, loop.steps + 1), desc=f"meta-train {name}", file=sys.stderr, leave=False,
               disable=not progress)
    for step in bar:
        if not going:
            break
        steps_run = step
        batch = [arrays[int(i)] for i in torch.randint(len(arrays), (loop.meta_batch,), generator=gen)]
        opt.zero_grad()
        loss(params, batch).backward()
        opt.step()
        if sched is not None:
            sched.step()
        if val_arrays and (step % loop.eval_every == 0 or step == loop.steps):
            going = measure(step)
    bar.close()
    seconds = time.perf_counter() - start
    if best is not None:
        fitted = Fitted(best[2], tuple(curve), best[1], steps_run, seconds)
    else:
        fitted = Fitted({k: v.detach().clone() for k, v in params.items()}, (), None, steps_run, seconds)
    if cache:
        save_weights(folder, fitted.params, {"method": name, **full, "episodes_hash": episodes_hash(list(episodes)),
                                             "n_episodes": len(episodes), "features": featurize.key,
                                             **fitted.to_dict()})
    return fitted


Center = Literal["support", "none"]


def features_from(ctx: MethodContext) -> Features:
    """The run's embedding space (``FeatureOptions``: embed, embed_layer, pooling): frozen vectors, with no statistic
    of the evaluated task outside the episode (each learner centres on its own episode's support: ``center``)."""
    o = ctx.run_wide(FeatureOptions)
    encoder = encoder_for(o.embed, get_lm=ctx.get_lm, layer=o.embed_layer, pooling=o.pooling)
    return Features(cache_for(encoder, ctx.embeddings, progress=ctx.progress))


def center_from(ctx: MethodContext) -> Center:
    """The run-wide episode normalisation (``FeatureOptions.center``)."""
    return ctx.run_wide(FeatureOptions).center


def meta_options(ctx: MethodContext) -> dict[str, Any]:
    """What every meta-learner takes from the run: the episode normalisation and the search's trial budget."""
    return {"center": center_from(ctx), "search_trials": ctx.run_wide(MetaTrainOptions).meta_search}


def support_center(xs: torch.Tensor, center: Center) -> torch.Tensor | None:
    """The episode's centre: the mean support vector (``'support'``), or none."""
    return xs.mean(0) if center == "support" and xs.shape[0] else None


def normalized(x: torch.Tensor, center: torch.Tensor | None) -> torch.Tensor:
    """SimpleShot's CL2N (Wang et al. 2019) with the episode's own centre: x − c rescaled to norm sqrt(dim); LM hidden
    states share a large common direction that the centring removes. ``center=None``: x unchanged.

    Why the support mean and not a mean of the task's train texts: the centre is a statistic, and the only data a
    learner may take one from is its budget; an evaluation episode's budget is its support set (uses no label)."""
    if center is None:
        return x
    x = x - center
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8) * x.shape[-1] ** 0.5


def episode_arrays(featurize: Featurizer, episodes: Sequence[Episode], center: Center = "none") -> list[Arrays]:
    """Tensors per episode (each normalised with its own support's centre), embedding all distinct examples in one
    pass."""
    examples = list({(e.id, content_key(e)): e for ep in episodes for e in (*ep.support, *ep.query)}.values())
    vecs = featurize(examples)
    row = {(e.id, content_key(e)): i for i, e in enumerate(examples)}
    # index_select with a tensor of rows: indexing with a Python list is ~100× slower (it is parsed element-wise)
    get = lambda xs: vecs.index_select(0, torch.tensor([row[(e.id, content_key(e))] for e in xs],  # noqa: E731
                                                       dtype=torch.long))
    out = []
    for ep in episodes:
        xs, xq = get(ep.support), get(ep.query)
        c = support_center(xs, center)
        out.append((normalized(xs, c), label_index(ep.support, ep.labels), normalized(xq, c),
                    label_index(ep.query, ep.labels)))
    return out


@dataclass(frozen=True)
class Bottleneck:
    """The sequence learners' input map, fit once on the meta-training items (after each episode's normalisation):
    projection on their top ``k`` principal directions (``k = 0``: every direction they span). Its statistics come
    from the meta-training pool only, which is in the learner's budget.

    ``whiten=False`` (the default): a rotation onto those directions and one global scale (unit mean variance per
    coordinate), with no re-centring, so within the kept subspace distances and cosines are the episode's own and
    ``k = 0`` changes no nearest neighbour. ``whiten=True``: PCA whitening (re-centred on the pool mean, every direction
    scaled to unit variance), iclkit's earlier input; measured as a control row (``knn-bottleneck``, AG News 4-way
    8-shot, MiniLM, 16 episodes, seed 5): whitening to 32 directions cost kNN 0.734 → 0.672, to every direction
    0.688, where the projection keeps the geometry.

    Why sequence learners take a bottleneck at all: MANN's controller and the in-context transformer's token
    embedding see LM hidden states and sentence embeddings on one scale, and a learned input layer over a few hundred
    training texts in a 384–576-dim space can memorize them instead of learning to read the support set. How many
    directions and how much training noise is a hyperparameter chosen on meta-validation episodes
    (``iclkit.baselines.search``); the control rows ``protonet-bottleneck`` and ``knn-bottleneck`` show what the
    bottleneck alone costs."""

    mean: torch.Tensor
    basis: torch.Tensor  # [dim, k]

    @classmethod
    def fit(cls, arrays: Sequence[Arrays], k: int, whiten: bool = False) -> "Bottleneck":
        x = torch.cat([torch.cat([xs, xq]) for xs, _, xq, _ in arrays]).double()
        x = torch.unique(x, dim=0)  # each distinct vector once, however many episodes show it
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        rank = int((s > s[0] * 1e-6).sum()) if s.numel() else 0
        k = min(k, rank) if k > 0 else rank
        sd = (s[:k] / max(1, x.shape[0] - 1) ** 0.5).clamp_min(1e-8)
        if whiten:
            basis = vh[:k].T / sd
        else:
            basis = vh[:k].T / sd.pow(2).mean().sqrt()
            mean = torch.zeros_like(mean)
        # A fixed sign per direction (the largest-magnitude entry positive): the same data always gives the same basis.
        basis = basis * torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
        return cls(mean.float(), basis.float())

    @property
    def dim(self) -> int:
        return int(self.basis.shape[-1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.basis
