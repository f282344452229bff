"""Seeded episode sampling, hashing and round trips."""

from __future__ import annotations

from collections import Counter

import pytest

from iclkit.episodes import EpisodeConfig, read_episodes, sample_episodes, write_episodes
from iclkit.errors import IclkitError
from iclkit.data.spec import TaskData, TaskSpec
from iclkit.data.tasks import load_task
from iclkit.metatrain import text_key
from iclkit.types import Example, content_key, episodes_hash


def toy_task(n_per_class=(10, 10, 10), n_test=30) -> TaskData:
    labels = tuple("abc"[: len(n_per_class)])
    train = [Example(f"train-{lab}{i}", {"text": f"{lab} train {i}"}, lab)
             for lab, n in zip(labels, n_per_class) for i in range(n)]
    test = [Example(f"test-{i}", {"text": f"test {i}"}, labels[i % len(labels)]) for i in range(n_test)]
    spec = TaskSpec(name="toy", type="classification", inputs=("text",), labels=labels, prompt="default",
                    sources=({"kind": "local"},))
    return TaskData(spec, tuple(train), tuple(test), "memory")


def test_same_seed_same_episodes_other_seed_other_episodes():
    task = toy_task()
    a = sample_episodes(task, EpisodeConfig(shots=(0, 2), n_episodes=5, n_query=6, seed=1))
    b = sample_episodes(task, EpisodeConfig(shots=(0, 2), n_episodes=5, n_query=6, seed=1))
    c = sample_episodes(task, EpisodeConfig(shots=(0, 2), n_episodes=5, n_query=6, seed=2))
    assert episodes_hash(a) == episodes_hash(b) and a == b
    assert episodes_hash(a) != episodes_hash(c)


def test_support_is_class_balanced_nested_and_disjoint_from_queries():
    task = toy_task()
    eps = sample_episodes(task, EpisodeConfig(shots=(0, 1, 4), n_episodes=3, n_way=2, n_query=8, seed=0))
    assert [e.shots for e in eps[:3]] == [0, 1, 4]
    for ep in eps:
        assert len(ep.labels) == 2
        assert Counter(e.label for e in ep.support) == Counter({lab: ep.shots for lab in ep.labels}) or ep.shots == 0
        assert {e.label for e in ep.query} <= set(ep.labels)
        assert not {e.fields["text"] for e in ep.support} & {e.fields["text"] for e in ep.query}
    k1, k4 = eps[1], eps[2]
    assert set(k1.support) <= set(k4.support) and k1.query == k4.query
    assert eps[0].support == ()


def test_queries_are_balanced_across_classes():
    eps = sample_episodes(toy_task(), EpisodeConfig(shots=(1,), n_episodes=4, n_query=9, seed=3))
    for ep in eps:
        assert sorted(Counter(q.label for q in ep.query).values()) == [3, 3, 3]


def test_demo_order_is_part_of_the_episode():
    eps = sample_episodes(toy_task(), EpisodeConfig(shots=(4,), n_episodes=10, n_query=3, seed=0))
    orders = {tuple(e.label for e in ep.support) for ep in eps}
    assert len(orders) > 1  # shuffled, not grouped by class


def test_class_with_fewer_than_k_examples_is_a_clear_error():
    task = toy_task(n_per_class=(10, 3, 10))
    with pytest.raises(IclkitError) as e:
        sample_episodes(task, EpisodeConfig(shots=(4,), n_episodes=1, n_query=3))
    assert "'b'" in e.value.message and "k=4" in e.value.message


def test_round_trip_and_tamper_detection(tmp_path):
    eps = sample_episodes(toy_task(), EpisodeConfig(shots=(0, 2), n_episodes=2, n_query=4))
    h = write_episodes(eps, tmp_path / "episodes.jsonl")
    back = read_episodes(tmp_path / "episodes.jsonl")
    assert back == eps and episodes_hash(back) == h
    text = (tmp_path / "episodes.jsonl").read_text().replace("train 1", "train 99", 1)
    (tmp_path / "episodes.jsonl").write_text(text)
    with pytest.raises(IclkitError) as e:
        read_episodes(tmp_path / "episodes.jsonl")
    assert e.value.field == "hash"


def test_real_task_episodes_are_reproducible(data_dir):
    task = load_task("trec")
    cfg = EpisodeConfig(shots=(1, 4), n_episodes=3, n_way=3, n_query=6, seed=7)
    assert episodes_hash(sample_episodes(task, cfg)) == episodes_hash(sample_episodes(load_task("trec"), cfg))


def test_open_answer_episodes():
    task = load_task("country-capital")
    eps = sample_episodes(task, EpisodeConfig(shots=(0, 3), n_episodes=2, n_query=5))
    assert [len(e.support) for e in eps] == [0, 3, 0, 3] and all(e.labels == () for e in eps)


@pytest.mark.parametrize("shots,named", [((1, 1), "1"), ((0, 4, 2, 4, 0), "0, 4"), ((3, 3, 3), "3")])
def test_a_shot_count_listed_twice_is_refused(shots, named):
    # Before: --shots 1,1 gave two episodes with one id (toy/k1/e0 twice), which the results could not tell apart.
    with pytest.raises(IclkitError) as e:
        sample_episodes(toy_task(), EpisodeConfig(shots=shots, n_episodes=2, n_query=3))
    assert e.value.field == "shots" and f"shot count {named} listed more than once" in e.value.message
    with pytest.raises(IclkitError) as e:
        sample_episodes(load_task("country-capital"), EpisodeConfig(shots=shots, n_episodes=1, n_query=3))
    assert e.value.field == "shots"
    with pytest.raises(IclkitError, match="at least one shot count"):
        sample_episodes(toy_task(), EpisodeConfig(shots=(), n_episodes=1, n_query=3))


def test_content_key_is_what_an_example_says():
    a = Example("x1", {"premise": "p", "hypothesis": "h"}, "yes")
    assert content_key(a) == (("hypothesis", "h"), ("premise", "p"))
    assert content_key(Example("other-id", {"hypothesis": "h", "premise": "p"}, "no")) == content_key(a)
    assert content_key(Example("x1", {"premise": "p", "hypothesis": "h2"}, "yes")) != content_key(a)


def test_a_query_never_has_its_near_duplicate_as_a_demonstration(data_dir):
    """TREC's "What are the Twin Cities ?" (train, description) is the re-cased twin of test's "What are the twin
    cities ?" (location): the same text to the model but not the same content key. In a task whose only query is
    the twin and whose description pool is the Title-cased one plus three others, the 3-shot support must be the
    three others, in every episode (drawn from the pool of four, the twin would be in about 3 of 4 supports)."""
    trec = load_task("trec")
    upper = next(e for e in trec.train if e.fields["text"] == "What are the Twin Cities ?")
    lower = next(e for e in trec.test if e.fields["text"] == "What are the twin cities ?")
    assert (upper.label, lower.label) == ("description", "location")  # a data fact: the twins disagree
    assert content_key(upper) != content_key(lower) and text_key(upper) == text_key(lower)
    train = [e for lab in trec.labels for e in [x for x in trec.train if x.label == lab and x != upper][:3]]
    task = TaskData(trec.spec, (upper, *train), (lower,), "memory")
    eps = sample_episodes(task, EpisodeConfig(shots=(3,), n_episodes=12, n_query=1, seed=0))
    others = {e for e in train if e.label == "description"}
    assert all(ep.query == (lower,) for ep in eps)
    assert all({e for e in ep.support if e.label == "description"} == others for ep in eps)


def test_open_answer_demonstrations_skip_a_query_near_duplicate():
    spec = TaskSpec(name="capitals", type="generation", inputs=("text",), labels=(), prompt="default",
                    sources=({"kind": "local"},))
    twin = Example("train-0", {"text": "Capital of France?"}, "Paris")
    train = (twin, *(Example(f"train-{i}", {"text": f"Capital of country {i}?"}, f"city {i}") for i in range(1, 4)))
    query = Example("test-0", {"text": "capital of  france ?"}, "Paris")
    eps = sample_episodes(TaskData(spec, train, (query,), "memory"),
                          EpisodeConfig(shots=(3,), n_episodes=8, n_query=1))
    assert all(set(ep.support) == set(train[1:]) for ep in eps)
