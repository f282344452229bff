"""Meta-training data and weights: episodes from the train split (never an evaluation query) or from other tasks,
the class-to-index map shuffled per episode, and trained weights saved once and reused."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from iclkit.baselines.common import OuterLoop
from iclkit.baselines.maml import MAML
from iclkit.baselines.mann import MANN
from iclkit.baselines.synthetic import Lookup, gaussian_episodes
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.learners import MetaTrainOptions
from iclkit.metatrain import (MetaTrainConfig, TrainingData, is_validation, meta_episodes, source_task,
                             training_episodes)
from iclkit.types import Example
from iclkit.data.tasks import load_task


def _key(e):
    return tuple(sorted(e.fields.items()))


@pytest.fixture(scope="module")
def trec(data_dir):
    return load_task("trec")


def test_train_split_episodes_never_hold_an_evaluation_query(trec):
    evaluation = sample_episodes(trec, EpisodeConfig(shots=(1, 4), n_episodes=5, n_query=12, seed=0))
    # A small train pool (15 texts per class, all of which the pools take) plus every evaluation query: the queries
    # would certainly be drawn if they were not excluded by content.
    few = tuple(e for lab in trec.labels for e in [x for x in trec.train if x.label == lab][:15])
    leaky = type(trec)(trec.spec, few + tuple(q for ep in evaluation for q in ep.query), trec.test, trec.source)
    train = training_episodes(leaky, evaluation, MetaTrainOptions(meta_episodes=60, meta_pool=32), seed=0)
    banned = {_key(q) for ep in evaluation for q in ep.query}
    assert len(train) == 60
    assert not any(_key(e) in banned for ep in train for e in (*ep.support, *ep.query))
    assert {ep.shots for ep in train} == {1, 4}  # the evaluation's shot counts
    assert all(sorted(ep.labels) == sorted(trec.labels) for ep in train)
    assert len({ep.labels for ep in train}) > 10  # class order (= class index) shuffled per episode
    again = training_episodes(leaky, evaluation, MetaTrainOptions(meta_episodes=60, meta_pool=32), seed=0)
    assert [ep.hash for ep in again] == [ep.hash for ep in train]


def test_cross_task_episodes_come_from_every_source(data_dir):
    sources = [(name, load_task(name).train) for name in ("agnews", "trec")]
    eps = meta_episodes(sources, MetaTrainConfig(n_episodes=20, n_way=2, shots=(2,), n_query=3, pool_per_class=16,
                                                 n_val_episodes=8))
    train = [ep for ep in eps if not is_validation(ep)]
    val = [ep for ep in eps if is_validation(ep)]
    assert len(train) == 20 and len(val) == 8
    assert {ep.task for ep in train} == {"agnews:metatrain", "trec:metatrain"}
    assert all(len(ep.labels) == 2 and len(ep.support) == 4 and len(ep.query) == 6 for ep in eps)
    # AG News (4 classes) and TREC (6) each hold out classes for meta-validation: never seen in training
    seen = {(source_task(ep), lab) for ep in train for lab in ep.labels}
    held = {(source_task(ep), lab) for ep in val for lab in ep.labels}
    assert held and not held & seen
    assert {t for t, _ in held} == {"agnews", "trec"}
    data = TrainingData.of(eps)
    assert data.n_val_episodes == 8 and set(data.val_classes) == {f"{t}:{lab}" for t, lab in held}


def _pool(name, n_classes, per_class):
    return (name, [Example(f"{name}/{c}/{i}", {"text": f"{name} {c} {i}"}, f"c{c}")
                   for c in range(n_classes) for i in range(per_class)])


def test_meta_validation_falls_back_to_held_out_sources_then_texts():
    config = MetaTrainConfig(n_episodes=10, n_way=3, shots=(1,), n_query=2, n_val_episodes=6, pool_per_class=40)
    # two sources with 3 classes each: no class can be spared, so one whole source is held out
    eps = meta_episodes([_pool("a", 3, 20), _pool("b", 3, 20)], config)
    train_tasks = {source_task(ep) for ep in eps if not is_validation(ep)}
    val_tasks = {source_task(ep) for ep in eps if is_validation(ep)}
    assert len(train_tasks) == len(val_tasks) == 1 and train_tasks != val_tasks
    # one source with 3 classes: a quarter of every class's texts is held out
    eps = meta_episodes([_pool("a", 3, 40)], config)
    train_texts = {e.id for ep in eps if not is_validation(ep) for e in (*ep.support, *ep.query)}
    val_texts = {e.id for ep in eps if is_validation(ep) for e in (*ep.support, *ep.query)}
    assert val_texts and not train_texts & val_texts
    # too few texts to hold any out: no meta-validation, the training episodes as before
    eps = meta_episodes([_pool("a", 3, 4)], config)
    assert len(eps) == 10 and not any(is_validation(ep) for ep in eps)


def test_one_source_with_too_few_classes_to_split_validates_on_classes_it_never_trained_on():
    # A class-split's seen classes: 7 classes, 5-way. Holding out 5 whole classes would leave 2, so a quarter of the
    # classes (2) is held out whole and every validation episode is filled to 5-way with held-out texts of the
    # training classes: each one asks for classes meta-training never saw, as the evaluation does.
    config = MetaTrainConfig(n_episodes=30, n_way=5, shots=(1, 4), n_query=2, n_val_episodes=12, pool_per_class=40)
    eps = meta_episodes([_pool("a", 7, 40)], config)
    train = [ep for ep in eps if not is_validation(ep)]
    val = [ep for ep in eps if is_validation(ep)]
    assert len(train) == 30 and len(val) == 12
    trained = {lab for ep in train for lab in ep.labels}
    novel = set.union(*({lab for lab in ep.labels} - trained for ep in val))
    assert len(trained) == 5 and len(novel) == 2
    assert all(novel <= set(ep.labels) and len(ep.labels) == 5 for ep in val)  # every novel class, every episode
    assert len({ep.labels for ep in val}) > 1  # the class-to-index map still shuffled
    train_texts = {e.id for ep in train for e in (*ep.support, *ep.query)}
    val_texts = {e.id for ep in val for e in (*ep.support, *ep.query)}
    assert val_texts and not train_texts & val_texts
    data = TrainingData.of(eps)
    assert set(data.val_novel_classes) == {f"a:{lab}" for lab in novel}
    assert meta_episodes([_pool("a", 7, 40)], config) == eps  # seeded


def test_max_classes_keeps_a_seeded_sample_of_each_source_s_classes_and_leaves_the_rest_alone():
    config = MetaTrainConfig(n_episodes=150, n_way=2, shots=(1,), n_query=2, n_val_episodes=0, pool_per_class=40)
    sources = [_pool("a", 10, 6), _pool("b", 3, 6), ("c", [e for e in _pool("c", 9, 6)[1] if e.label != "c0"
                                                            or e.id.endswith(("/0", "/1"))])]  # c0: too few texts
    capped = meta_episodes(sources, replace(config, max_classes=4))
    by_source = {name: {lab for ep in capped if source_task(ep) == name for lab in ep.labels} for name in "abc"}
    assert len(by_source["a"]) == len(by_source["c"]) == 4 and len(by_source["b"]) == 3  # b: fewer than the cap
    assert "c0" not in by_source["c"]  # sampled among the classes with enough texts only
    assert meta_episodes(sources, replace(config, max_classes=4)) == capped  # seeded
    # a cap no source exceeds draws exactly the uncapped episodes (its sample has its own RNG)
    assert meta_episodes(sources, replace(config, max_classes=10)) == meta_episodes(sources, config)
    assert len({lab for ep in meta_episodes(sources, config) if source_task(ep) == "a" for lab in ep.labels}) == 10


@pytest.mark.parametrize("make", [
    lambda f: MAML(f, hidden=8, loop=OuterLoop(5, 1e-3, 2), progress=False),
    lambda f: MANN(f, hidden=8, slots=16, width=4, input_dim=4, loop=OuterLoop(3, 1e-3, 2), progress=False),
], ids=["maml", "mann"])
def test_weights_are_saved_once_and_reused(tmp_path, monkeypatch, make):
    monkeypatch.setenv("ICLKIT_CACHE", str(tmp_path))
    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 10, n_way=3, shots=2, n_query=2, dim=6)
    first = make(lookup)
    first.meta_train(train)
    saved = list((tmp_path / "metatrained").iterdir())
    assert len(saved) == 1 and {p.name for p in saved[0].iterdir()} == {"weights.safetensors", "config.json"}

    import iclkit.baselines.common as common

    def fail(*args, **kwargs):
        raise AssertionError("trained again although the weights were saved")

    monkeypatch.setattr(common.torch.optim, "Adam", fail)
    second = make(lookup)
    second.meta_train(train)  # loads, does not train
    assert first.params is not None and second.params is not None
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    monkeypatch.undo()
    monkeypatch.setenv("ICLKIT_CACHE", str(tmp_path))
    other = gaussian_episodes(lookup, "other", 10, n_way=3, shots=2, n_query=2, dim=6, seed=5)
    make(lookup).meta_train(other)  # other training episodes: other weights
    assert len(list((tmp_path / "metatrained").iterdir())) == 2


def test_training_data_counts_distinct_labelled_texts_per_source_task():
    from iclkit.metatrain import TrainingData
    from iclkit.types import Episode, Example

    a, b = Example("1", {"text": "same words"}, "x"), Example("2", {"text": "same words"}, "x")  # one text twice
    c, d = Example("3", {"text": "other"}, "y"), Example("4", {"text": "same words"}, "y")  # same text, other label
    eps = [Episode("agnews:metatrain", 0, 1, 0, ("x", "y"), (a, c), (b, d)),
           Episode("trec:metatrain", 1, 1, 0, ("y", "x"), (a, c), (b, d))]
    data = TrainingData.of(eps)
    # by hand: per task {(same words, x), (other, y), (same words, y)} → 3 each
    assert (data.n_texts, data.n_episodes) == (6, 2) and TrainingData.of(eps[:1]).n_texts == 3
    assert data.tasks == ("agnews", "trec") and data.classes == ("agnews:x", "agnews:y", "trec:x", "trec:y")


def test_a_meta_learner_that_takes_no_outer_step_reports_no_meta_training_data():
    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 4, n_way=3, shots=2, n_query=2, dim=6)
    trained = MAML(lookup, hidden=8, loop=OuterLoop(2, 1e-3, 2), cache=False, progress=False)
    untrained = MAML(lookup, hidden=8, loop=OuterLoop(0, 1e-3, 2), cache=False, progress=False)
    for m in (trained, untrained):
        m.meta_train(train)
    assert trained.describe()["meta_train_data"]["n_texts"] == 4 * 3 * 4  # every item of every episode is distinct
    assert "meta_train_data" not in untrained.describe()
