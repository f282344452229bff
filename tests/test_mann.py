"""MANN (Santoro et al. 2016) after meta-training on Gaussian-cluster episodes: the per-presentation accuracy curve
(1st presentation of a class near chance, later ones far above), ≥ 90% query accuracy at 5-way 5-shot, and chance
when the support labels are shuffled."""

from __future__ import annotations

import torch

from iclkit.baselines.common import OuterLoop, episode_arrays
from iclkit.baselines.mann import MANN, Shape, init_params, presentation_accuracy, run_episode
from iclkit.baselines.synthetic import Lookup, gaussian_episodes
from iclkit.metatrain import generator
from iclkit.analysis.stats import mean_ci

SHAPE = {"dim": 8, "noise": 0.3}
STEPS, LR, META_BATCH = 300, 1e-2, 32  # about 40 s on one core
CHANCE = 0.2


def accuracies(mann, episodes):
    return [sum(p.correct for p in mann.adapt(ep.support, ep.labels).predict(ep.query)) / len(ep.query)
            for ep in episodes]


def test_presentation_curve_query_accuracy_and_shuffled_labels(capsys, one_torch_thread):
    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 1000, seed=1, **SHAPE)
    test = gaussian_episodes(lookup, "test", 40, seed=2, **SHAPE)
    shuffled = gaussian_episodes(lookup, "shuffled", 200, seed=3, shuffle_labels=True, **SHAPE)
    mann = MANN(lookup, hidden=64, slots=32, width=20, heads=1, loop=OuterLoop(STEPS, LR, META_BATCH), cache=False,
                progress=False)
    mann.meta_train(train)
    assert mann.shape is not None and mann.params is not None and mann._inputs is not None
    arrays = mann.episode_inputs(test)
    before = presentation_accuracy(mann.shape, init_params(mann.shape, generator(0, "untrained")), arrays)
    curve = presentation_accuracy(mann.shape, mann.params, arrays)
    acc, lo, hi = mean_ci(accuracies(mann, test))
    shuf, s_lo, s_hi = mean_ci(accuracies(mann, shuffled))
    with capsys.disabled():
        print(f"\nMANN per-presentation accuracy: untrained {[round(a, 2) for a in before]}, "
              f"trained {[round(a, 2) for a in curve]}; queries {acc:.3f} [{lo:.3f}, {hi:.3f}], "
              f"shuffled labels {shuf:.3f} [{s_lo:.3f}, {s_hi:.3f}]")
    # Untrained, the memory is already a soft nearest-neighbour reader (init_params): an unseen class cannot be
    # named, a class seen before mostly can.
    assert before[0] < 0.45 and sum(before[1:]) / len(before[1:]) > 0.6
    # A class never seen before cannot be named (chance, a little more by excluding classes already shown); from
    # the 2nd presentation on the binding is in memory.
    assert curve[0] < 0.45
    assert min(curve[1:]) >= curve[0] + 0.25 and sum(curve[2:]) / len(curve[2:]) >= 0.85
    assert acc >= 0.9
    assert s_lo <= CHANCE <= s_hi


def test_queries_are_independent_of_each_other():
    lookup = Lookup()
    ep = gaussian_episodes(lookup, "one", 1, seed=4, **SHAPE)[0]
    shape = Shape(8, 5, 16, 8, 6, 1)
    params = init_params(shape, generator(0, "t"))
    params = {k: v + 0.1 * torch.randn(v.shape, generator=generator(1, k)) for k, v in params.items()}
    xs, ys, xq, _ = episode_arrays(lookup, [ep])[0]
    _, together = run_episode(shape, params, xs[None], ys[None], xq[None])
    _, reversed_ = run_episode(shape, params, xs[None], ys[None], xq.flip(0)[None])
    _, alone = run_episode(shape, params, xs[None], ys[None], xq[:1][None])
    assert torch.allclose(together[0], reversed_[0].flip(0), atol=1e-6)
    assert torch.allclose(together[0, :1], alone[0], atol=1e-6)
    assert not torch.allclose(together[0, 0], together[0, 1])  # the output layer is not zero: queries do differ


def test_label_reaches_memory_next_to_its_item():
    """The value written at step t lands in the slots whose key was written at t−1 (the delayed-label binding)."""
    shape = Shape(4, 3, 8, 6, 5, 1)
    params = init_params(shape, generator(0, "b"))
    params = {k: v + 0.3 * torch.randn(v.shape, generator=generator(2, k)) for k, v in params.items()}
    from iclkit.baselines.mann import initial_state, step

    s0 = initial_state(shape, 1, torch.float32)
    _, s1 = step(shape, params, torch.randn(1, 4, generator=generator(3)), torch.zeros(1, 3), s0)
    _, s2 = step(shape, params, torch.randn(1, 4, generator=generator(4)), torch.eye(3)[:1], s1)
    written_at_1 = s1.write_w[0, 0] > 1e-3
    changed_values = (s2.memory[0, :, 5:] - s1.memory[0, :, 5:]).abs().sum(-1) > 1e-6
    cleared = torch.zeros(6, dtype=torch.bool)
    cleared[s1.usage[0].topk(1, largest=False).indices] = True  # the least-used slot is cleared at step 2 before anything is written
    assert written_at_1.any() and torch.equal(changed_values & ~cleared, written_at_1 & ~cleared)


def test_query_step_equals_a_full_step_from_the_tiled_state():
    """query_step reads the memory per episode; it must give what ``step`` gives each query from a copy of the state."""
    from iclkit.baselines.mann import State, query_step, step

    shape = Shape(6, 3, 8, 10, 6, 2)
    params = {k: v + 0.2 * torch.randn(v.shape, generator=generator(5, k))
              for k, v in init_params(shape, generator(0, "q")).items()}
    xs, xq = torch.randn(2, 7, 6, generator=generator(6)), torch.randn(2, 4, 6, generator=generator(7))
    ys = torch.randint(0, 3, (2, 7), generator=generator(8))
    from iclkit.baselines.mann import initial_state

    prev = torch.cat([torch.zeros(2, 1, 3), torch.nn.functional.one_hot(ys, 3).float()], 1)
    state = initial_state(shape, 2, torch.float32)
    for i in range(7):  # the support, then the step that carries its last label, as run_episode does
        _, state = step(shape, params, xs[:, i], prev[:, i], state)
    _, state = step(shape, params, torch.zeros(2, 6), prev[:, 7], state)
    assert torch.allclose(run_episode(shape, params, xs, ys, xq)[1], query_step(shape, params, xq, state))
    mine = query_step(shape, params, xq, state)
    tiled = State(*(v.repeat_interleave(4, 0) for v in state))
    full, _ = step(shape, params, xq.reshape(8, 6), torch.zeros(8, 3), tiled)
    assert torch.allclose(mine, full.view(2, 4, 3), atol=1e-5)
