"""Every meta-learner starts at its floor, and no baseline reads a statistic of the evaluated task outside the episode.

- MAML, FOMAML and protonet-proj before meta-training (identity body / identity projection) predict exactly what
  ProtoNet predicts on the same features, episode by episode, at 0 inner steps.
- Early stopping on meta-validation episodes keeps step 0 when meta-training only hurts (training episodes with
  shuffled labels), so the kept learner is still ProtoNet; when training helps, a later step is kept.
- Changing the evaluated task's train texts outside the episodes changes no baseline's prediction (the old code
  centred every baseline's features on 256 of those texts).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from iclkit import learners
from iclkit.baselines.common import OuterLoop
from iclkit.baselines.maml import MAML
from iclkit.baselines.protonet import ProtoNet
from iclkit.baselines.synthetic import Lookup, gaussian_episodes
from iclkit.data.tasks import load_task
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.metatrain import VAL_SUFFIX, MetaTrainConfig, meta_episodes
from iclkit.types import Episode, Example


def _offset(lookup: Lookup, shift: float = 5.0) -> Lookup:
    """Every vector moved along one shared direction, like LM hidden states' common component."""
    d = next(iter(lookup.vectors.values())).shape[0]
    direction = torch.ones(d) / d ** 0.5
    lookup.vectors = {k: v + shift * direction for k, v in lookup.vectors.items()}
    return lookup


def _predictions(learner, episodes):
    return [learner.adapt(ep.support, ep.labels).predict(ep.query) for ep in episodes]


def _same(a, b):
    for pa, pb in zip(a, b):
        assert [p.predicted for p in pa] == [p.predicted for p in pb]
        for x, y in zip(pa, pb):
            for lab in x.probs:
                assert abs(x.probs[lab] - y.probs[lab]) < 1e-4


FLOORED = {
    "maml": lambda f, loop: MAML(f, hidden=16, inner_steps=0, loop=loop, cache=False, progress=False),
    "fomaml": lambda f, loop: MAML(f, hidden=16, inner_steps=0, first_order=True, loop=loop, cache=False,
                                   progress=False, name="fomaml"),
    "protonet-proj": lambda f, loop: ProtoNet(f, project=True, loop=loop, cache=False, progress=False,
                                              name="protonet-proj"),
}


@pytest.mark.parametrize("name", sorted(FLOORED))
def test_before_meta_training_each_learner_is_protonet(name):
    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 6, n_way=4, shots=3, n_query=4, dim=12, seed=1)
    test = gaussian_episodes(lookup, "test", 12, n_way=4, shots=3, n_query=6, dim=12, noise=1.2, seed=2)
    _offset(lookup)
    learner = FLOORED[name](lookup, OuterLoop(steps=0))
    learner.meta_train(train)
    _same(_predictions(learner, test), _predictions(ProtoNet(lookup), test))


def _as_validation(episodes: list[Episode]) -> list[Episode]:
    return [dataclasses.replace(ep, task=ep.task + VAL_SUFFIX) for ep in episodes]


def test_early_stopping_keeps_step_zero_when_training_hurts():
    lookup = Lookup()
    # training episodes whose support labels are shuffled: what meta-training learns there cannot help
    train = gaussian_episodes(lookup, "train", 200, n_way=4, shots=3, n_query=4, dim=12, seed=1,
                              shuffle_labels=True)
    val = _as_validation(gaussian_episodes(lookup, "val", 30, n_way=4, shots=3, n_query=4, dim=12, noise=1.0, seed=3))
    test = gaussian_episodes(lookup, "test", 12, n_way=4, shots=3, n_query=6, dim=12, noise=1.0, seed=2)
    _offset(lookup)
    loop = OuterLoop(steps=60, lr=5e-2, meta_batch=4, eval_every=10, patience=10)
    maml = MAML(lookup, hidden=16, inner_steps=0, loop=loop, cache=False, progress=False)
    maml.meta_train(train + val)
    assert maml.fitted is not None and maml.fitted.curve[0][0] == 0 and len(maml.fitted.curve) == 7
    assert maml.fitted.best_step == 0, maml.fitted.curve
    assert maml.describe()["meta_val"]["best_step"] == 0
    _same(_predictions(maml, test), _predictions(ProtoNet(lookup), test))


def test_maml_falls_back_to_its_floor_when_its_inner_loop_hurts_on_meta_validation():
    """An inner loop that overshoots (a learning rate far too large for the features' scale) hurts at every outer
    step, step 0 included; the floor (identity body, 0 inner steps) is then kept, and MAML predicts as ProtoNet."""
    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 40, n_way=4, shots=4, n_query=4, dim=12, noise=1.5, seed=1)
    val = _as_validation(gaussian_episodes(lookup, "val", 30, n_way=4, shots=4, n_query=4, dim=12, noise=1.5,
                                           seed=3))
    test = gaussian_episodes(lookup, "test", 12, n_way=4, shots=4, n_query=6, dim=12, noise=1.5, seed=2)
    loop = OuterLoop(steps=20, lr=1e-3, meta_batch=4, eval_every=10, patience=2)
    overshoot = MAML(lookup, hidden=16, inner_steps=5, inner_lr=50.0, loop=loop, cache=False, progress=False)
    overshoot.meta_train(train + val)
    check = overshoot.describe()["floor_check"]
    assert check["kept"] == "floor" and check["floor_meta_val_accuracy"] > check["best_meta_val_accuracy"] + 0.1
    _same(_predictions(overshoot, test), _predictions(ProtoNet(lookup), test))
    gentle = MAML(lookup, hidden=16, inner_steps=1, inner_lr=1e-4, loop=loop, cache=False, progress=False)
    gentle.meta_train(train + val)  # an inner loop that changes ~nothing ties with the floor: not replaced
    assert gentle.describe()["floor_check"]["kept"] == "meta-trained" and gentle.eval_steps == 1


def test_early_stopping_keeps_a_later_step_when_training_helps():
    # classes differ only in the first 2 of 12 directions; the rest is noise a learned projection can drop
    g = torch.Generator().manual_seed(0)
    lookup = Lookup()

    def episodes(tag, n, seed):
        eps = gaussian_episodes(lookup, tag, n, n_way=3, shots=2, n_query=4, dim=12, noise=0.0, seed=seed)
        for ep in eps:
            for e in (*ep.support, *ep.query):
                v = lookup.vectors[e.id]
                lookup.vectors[e.id] = torch.cat([v[:2] * 0.6, 3.0 * torch.randn(10, generator=g)])
        return eps

    train = episodes("train", 200, 1)
    val = _as_validation(episodes("val", 30, 3))
    loop = OuterLoop(steps=150, lr=3e-2, meta_batch=8, eval_every=25, patience=10)
    proj = ProtoNet(lookup, project=True, loop=loop, cache=False, progress=False, name="protonet-proj")
    proj.meta_train(train + val)
    assert proj.fitted is not None and proj.fitted.best_step and proj.fitted.best_step > 0
    curve = dict(proj.fitted.curve)
    assert curve[proj.fitted.best_step] > curve[0] + 0.1  # held-out accuracy gained, so training was kept


@pytest.fixture(scope="module")
def sentiment():
    return load_task("movie-sentiment")


def test_no_baseline_reads_the_evaluated_tasks_texts_outside_the_episodes(sentiment, one_torch_thread):
    evaluation = sample_episodes(sentiment, EpisodeConfig(shots=(1, 4), n_episodes=3, n_query=6, seed=0))
    shown = {(e.id, e.fields["text"]) for ep in evaluation for e in (*ep.support, *ep.query)}
    # the meta-learners' episodes stay fixed (texts no evaluation episode shows); only the train split changes
    fixed_meta = [e for e in sentiment.test if (e.id, e.fields["text"]) not in shown]
    train_eps = meta_episodes([("fixed", fixed_meta)],
                              MetaTrainConfig(n_episodes=12, n_way=2, shots=(1, 4), n_query=4, n_val_episodes=4))
    changed = tuple(e if (e.id, e.fields["text"]) in shown else
                    Example(e.id, {"text": "an entirely different sentence about cooking pasta " + e.id}, e.label)
                    for e in sentiment.train)
    assert sum(a != b for a, b in zip(changed, sentiment.train)) > 50
    other = dataclasses.replace(sentiment, train=changed)
    options = {"embed": "minilm", "meta_steps": 3, "mann_input_dim": 8, "transformer_input_dim": 8}
    methods = ("protonet", "knn", "linear", "protonet-proj", "maml", "fomaml", "mann", "transformer")
    embeddings: dict = {}  # one run's embedding cache, shared by both tasks (same encoder)
    out = {}
    for task in (sentiment, other):
        preds = {}
        for method in methods:
            ctx = learners.MethodContext(task=task, seed=0, options=options, embeddings=embeddings, progress=False)
            learner = learners.make(method, ctx)
            if isinstance(learner, learners.MetaLearner):
                learner.cache = False
                learner.meta_train(train_eps)
            preds[method] = _predictions(learner, evaluation)
        out[task is other] = preds
    for method in methods:
        _same(out[False][method], out[True][method])


def test_untrained_mann_reads_its_memory_as_a_nearest_neighbour_vote():
    """MANN's floor is kNN: before meta-training its memory read is a softmax(β₀ · cosine) vote over the support
    items, i.e. kNN's softmax mode at temperature 1/β₀ on the same support-centred vectors."""
    from iclkit.baselines.knn import KNN
    from iclkit.baselines.mann import BETA0, MANN

    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 10, n_way=4, shots=3, n_query=4, dim=12, seed=1)
    test = gaussian_episodes(lookup, "test", 20, n_way=4, shots=3, n_query=6, dim=12, noise=1.2, seed=2)
    _offset(lookup)
    mann = MANN(lookup, loop=OuterLoop(steps=0), cache=False, progress=False)
    mann.meta_train(train)
    knn = KNN(lookup, mode="softmax", temperature=1 / BETA0)
    mine = [p.predicted for ps in _predictions(mann, test) for p in ps]
    floor = [p.predicted for ps in _predictions(knn, test) for p in ps]
    agree = sum(a == b for a, b in zip(mine, floor)) / len(mine)
    assert agree >= 0.95, agree
    assert sum(p.correct for ps in _predictions(mann, test) for p in ps) / len(mine) > 0.5  # chance 0.25


def test_untrained_transformer_attends_as_a_nearest_neighbour_vote():
    """The in-context transformer's floor is kNN too: before meta-training its first attention layer weighs the
    support items by softmax(β₀ · cosine) and reads their labels (kNN's softmax mode at temperature 1/β₀)."""
    from iclkit.baselines.knn import KNN
    from iclkit.baselines.transformer import BETA0, InContextTransformer

    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 10, n_way=4, shots=3, n_query=4, dim=64, seed=1)
    test = gaussian_episodes(lookup, "test", 20, n_way=4, shots=3, n_query=6, dim=64, noise=2.0, seed=2)
    _offset(lookup)
    tf = InContextTransformer(lookup, loop=OuterLoop(steps=0), cache=False, progress=False)
    tf.meta_train(train)
    mine = [p.predicted for ps in _predictions(tf, test) for p in ps]
    floor = [p.predicted for ps in _predictions(KNN(lookup, mode="softmax", temperature=1 / BETA0), test)
             for p in ps]
    assert sum(a == b for a, b in zip(mine, floor)) / len(mine) >= 0.9
