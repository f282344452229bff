"""The in-context transformer (stretch baseline): meta-trained on Gaussian-cluster episodes it reaches ≥ 90% at 5-way
5-shot, falls to chance with shuffled support labels, and predicts each query independently of the others."""

from __future__ import annotations

import torch

from iclkit.baselines.common import OuterLoop, episode_arrays
from iclkit.baselines.synthetic import Lookup, gaussian_episodes
from iclkit.baselines.transformer import InContextTransformer, Shape, forward, init_params
from iclkit.metatrain import generator
from iclkit.analysis.stats import mean_ci

SHAPE = {"dim": 8, "noise": 0.3}
CHANCE = 0.2


def accuracies(learner, episodes):
    return [sum(p.correct for p in learner.adapt(ep.support, ep.labels).predict(ep.query)) / len(ep.query)
            for ep in episodes]


def test_learns_in_context_and_falls_to_chance_with_shuffled_labels(capsys, one_torch_thread):
    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 1000, seed=1, **SHAPE)
    test = gaussian_episodes(lookup, "test", 40, seed=2, **SHAPE)
    shuffled = gaussian_episodes(lookup, "shuffled", 200, seed=3, shuffle_labels=True, **SHAPE)
    tf = InContextTransformer(lookup, loop=OuterLoop(300, 1e-3, 32, cosine=True), cache=False, progress=False)
    tf.meta_train(train)
    acc, lo, hi = mean_ci(accuracies(tf, test))
    shuf, s_lo, s_hi = mean_ci(accuracies(tf, shuffled))
    with capsys.disabled():
        print(f"\nin-context transformer: queries {acc:.3f} [{lo:.3f}, {hi:.3f}], "
              f"shuffled labels {shuf:.3f} [{s_lo:.3f}, {s_hi:.3f}]")
    assert acc >= 0.9
    assert s_lo <= CHANCE <= s_hi


def test_queries_are_independent_and_support_is_a_set():
    lookup = Lookup()
    ep = gaussian_episodes(lookup, "one", 1, seed=4, **SHAPE)[0]
    shape = Shape(8, 5, width=16, layers=2, heads=2)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=generator(1, k))
              for k, v in init_params(shape, generator(0, "t")).items()}
    xs, ys, xq, _ = episode_arrays(lookup, [ep])[0]
    together = forward(shape, params, xs[None], ys[None], xq[None])[0]
    reversed_ = forward(shape, params, xs[None], ys[None], xq.flip(0)[None])[0]
    alone = forward(shape, params, xs[None], ys[None], xq[:1][None])[0]
    perm = torch.randperm(len(ys), generator=generator(2))
    shuffled_support = forward(shape, params, xs[perm][None], ys[perm][None], xq[None])[0]
    assert torch.allclose(together, reversed_.flip(0), atol=1e-5)
    assert torch.allclose(together[:1], alone, atol=1e-5)
    assert torch.allclose(together, shuffled_support, atol=1e-5)
    assert not torch.allclose(together[0], together[1])
