"""Every baseline learns Gaussian-cluster episodes (fresh class centres per episode: only adaptation helps) and
falls to chance when the support labels are shuffled."""

from __future__ import annotations

import pytest
import torch

from iclkit.baselines.bottleneck import Bottlenecked
from iclkit.baselines.common import OuterLoop
from iclkit.baselines.knn import KNN
from iclkit.baselines.linear import Linear
from iclkit.baselines.maml import MAML
from iclkit.baselines.protonet import ProtoNet
from iclkit.baselines.synthetic import Lookup, gaussian_episodes
from iclkit.learners import MetaLearner
from iclkit.analysis.stats import mean_ci


CHANCE = 1 / 5

LEARNERS = {
    "protonet": lambda f: ProtoNet(f),
    "protonet-proj": lambda f: ProtoNet(f, project=True, loop=OuterLoop(100, 1e-2, 8), cache=False,
                                        progress=False, name="protonet-proj"),
    "maml": lambda f: MAML(f, hidden=32, inner_lr=0.5, loop=OuterLoop(150, 3e-3, 4), cache=False, progress=False),
    "fomaml": lambda f: MAML(f, hidden=32, inner_lr=0.5, first_order=True, loop=OuterLoop(150, 3e-3, 4),
                             cache=False, progress=False, name="fomaml"),
    "knn": lambda f: KNN(f),
    "linear": lambda f: Linear(f),
    "knn-bottleneck": lambda f: Bottlenecked(f, floor="knn", input_dim=8),
    "protonet-bottleneck": lambda f: Bottlenecked(f, floor="protonet", input_dim=8, name="protonet-bottleneck"),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Meta-training on one thread (faster here, repeatable); the count is restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    lookup = Lookup()
    return lookup, {
        "train": gaussian_episodes(lookup, "train", 300, seed=1),
        "test": gaussian_episodes(lookup, "test", 40, seed=2),
        "shuffled": gaussian_episodes(lookup, "shuffled", 40, seed=3, shuffle_labels=True),
    }


def episode_accuracies(learner, episodes):
    accs = []
    for ep in episodes:
        preds = learner.adapt(ep.support, ep.labels).predict(ep.query)
        assert [p.query_id for p in preds] == [q.id for q in ep.query]
        accs.append(sum(p.correct for p in preds) / len(preds))
    return accs


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learns_5way_5shot_and_falls_to_chance_with_shuffled_labels(data, name):
    lookup, eps = data
    learner = LEARNERS[name](lookup)
    if isinstance(learner, MetaLearner):
        learner.meta_train(eps["train"])
    acc, _, _ = mean_ci(episode_accuracies(learner, eps["test"]))
    assert acc >= 0.9, f"{name}: {acc:.3f}"
    shuffled, lo, hi = mean_ci(episode_accuracies(learner, eps["shuffled"]))
    assert lo <= CHANCE <= hi, f"{name} with shuffled labels: {shuffled:.3f} [{lo:.3f}, {hi:.3f}]"


def test_bottleneck_controls_read_the_sequence_learners_inputs(data):
    """knn-bottleneck is kNN on exactly the vectors MANN reads (support-centred, then the same projection)."""
    from iclkit.baselines.common import OuterLoop as Loop
    from iclkit.baselines.mann import MANN

    lookup, eps = data
    control = Bottlenecked(lookup, floor="knn", input_dim=8)
    control.meta_train(eps["train"][:40])
    mann = MANN(lookup, input_dim=8, hidden=8, slots=8, loop=Loop(steps=0), cache=False, progress=False)
    mann.meta_train(eps["train"][:40])
    for ep in eps["test"][:5]:
        xs, ys, xq, _ = mann.episode_inputs([ep])[0]
        by_hand = KNN(Lookup(vectors={e.id: v for e, v in zip((*ep.support, *ep.query), torch.cat([xs, xq]))}),
                      center="none").adapt(ep.support, ep.labels).predict(ep.query)
        assert [p.predicted for p in control.adapt(ep.support, ep.labels).predict(ep.query)] == [
            p.predicted for p in by_hand]


def test_adapt_returns_new_state_and_predictions_ignore_query_batching(data):
    lookup, eps = data
    learner = ProtoNet(lookup)
    a, b = eps["test"][0], eps["test"][1]
    first = learner.adapt(a.support, a.labels)
    learner.adapt(b.support, b.labels)  # adapting to another episode must not touch ``first``
    whole = first.predict(a.query)
    single = [p for q in a.query for p in first.predict([q])]
    for w, s in zip(whole, single):
        assert w.predicted == s.predicted
        assert all(abs(w.scores[k] - s.scores[k]) < 1e-3 for k in a.labels)
    assert all(abs(sum(p.probs.values()) - 1) < 1e-6 for p in whole)


def _results(method, accs, hashes):
    from iclkit.types import EpisodeResult, Prediction

    out = []
    for h, acc in zip(hashes, accs):
        preds = tuple(Prediction(f"q{i}", "a", "a" if i < acc * 4 else "b", i < acc * 4) for i in range(4))
        out.append(EpisodeResult(f"t/k1/e{h}", h, "t", method, 1, ("a", "b"), preds))
    return out


def test_paired_comparison_against_icl():
    from iclkit.analysis.paired import compare
    from iclkit.analysis.stats import paired_test

    hashes = [f"h{i}" for i in range(20)]
    icl = _results("icl", [0.5] * 20, hashes)
    better = _results("protonet", [0.75] * 18 + [0.5] * 2, hashes)
    (row,) = compare(icl + better)
    assert row["method"] == "protonet" and row["n_episodes"] == 20 and row["n_dropped"] == 0
    assert row["difference"] == pytest.approx(0.225) and row["ci_low"] > 0 and row["p_value"] < 0.001
    # a sign-flip test on pure noise is not significant
    rng = torch.Generator().manual_seed(0)
    a, b = torch.rand(30, generator=rng).tolist(), torch.rand(30, generator=rng).tolist()
    assert paired_test(a, b, seed=1).p_value > 0.05
    # episodes are paired by hash: disjoint episodes give no comparison, a partial overlap says what it dropped
    assert compare(icl + _results("knn", [0.5] * 20, [f"x{i}" for i in range(20)])) == []
    (partial,) = compare(icl + _results("knn", [1.0] * 12, hashes[:10] + ["y0", "y1"]))
    assert (partial["n_episodes"], partial["n_dropped"], partial["difference"]) == (10, 12, pytest.approx(0.5))
