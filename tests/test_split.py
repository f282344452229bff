"""The one held-out split (iclkit.data.split): deterministic, disjoint, stratified when asked, and unchanged for the
shipped tasks that use it."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from iclkit.data.split import holdout, holdout_fraction
from iclkit.data.tasks import load_task
from iclkit.errors import IclkitError
from iclkit.types import Example


def examples(labels: str) -> list[Example]:
    return [Example(f"e{i}", {"text": f"text {i}"}, lab) for i, lab in enumerate(labels)]


@pytest.mark.parametrize("stratify", [True, False])
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_split_is_deterministic_disjoint_and_complete(stratify, fraction):
    data = examples("".join(random.Random(3).choice("abc") for _ in range(61)))
    train, test = holdout(data, fraction, stratify=stratify)
    assert (train, test) == holdout(list(data), fraction, stratify=stratify)
    assert not {e.id for e in train} & {e.id for e in test}
    assert sorted(e.id for e in train + test) == sorted(e.id for e in data)
    if stratify:  # round(fraction * n) per label; each part grouped by label (sorted), input order inside a group
        for lab, n in Counter(e.label for e in data).items():
            assert sum(e.label == lab for e in test) == round(fraction * n)
        for part in (train, test):
            assert part == sorted(part, key=lambda e: (e.label, data.index(e)))
    else:  # round(fraction * n) overall; both parts in input order
        assert len(test) == round(fraction * len(data))
        for part in (train, test):
            assert part == sorted(part, key=data.index)


def test_unstratified_split_matches_an_independent_shuffle():
    # The reference is the word-relation split as it was first written: one shuffle of the indices, the first
    # round(f * n) of them held out, both parts in index order.
    data = examples("x" * 37)
    order = list(range(len(data)))
    random.Random("iclkit-holdout").shuffle(order)
    n_test = round(0.5 * len(data))
    assert holdout(data, 0.5, stratify=False) == ([data[i] for i in sorted(order[n_test:])],
                                                  [data[i] for i in sorted(order[:n_test])])


# Hand-sorted queries of two shipped word-relation tasks, recorded from the split before it had one home.
CURRENCY_TEST = ["Angola", "Argentina", "Armenia", "Croatia", "Europe", "Hungary", "India", "Macedonia", "Malaysia",
                 "Mexico", "Poland", "Romania", "Sweden", "Ukraine", "Vietnam"]
CURRENCY_TRAIN = ["Algeria", "Brazil", "Bulgaria", "Cambodia", "Canada", "Denmark", "Iran", "Japan", "Korea",
                  "Latvia", "Lithuania", "Nigeria", "Russia", "Thailand", "USA"]
OPPOSITE_TEST = ["aware", "certain", "clear", "convincing", "efficient", "ethical", "fortunate", "known", "likely",
                 "logical", "possibly", "rational", "sure", "tasteful"]


@pytest.mark.parametrize("name,test_words,train_words", [
    ("currency", CURRENCY_TEST, CURRENCY_TRAIN), ("opposite", OPPOSITE_TEST, None),
])
def test_word_relation_split_is_unchanged(name, test_words, train_words):
    task = load_task(name)
    field = task.spec.inputs[0]
    assert sorted(e.fields[field] for e in task.test) == test_words
    if train_words is not None:
        assert sorted(e.fields[field] for e in task.train) == train_words
    assert not {e.fields[field] for e in task.train} & set(test_words)
    for part in (task.train, task.test):  # input (= sorted pair) order, as before
        assert [e.fields[field] for e in part] == sorted(e.fields[field] for e in part)


def test_builtin_classification_split_is_stratified():
    task = load_task("movie-sentiment")
    both = Counter(e.label for e in task.train + task.test)
    assert Counter(e.label for e in task.test) == {lab: round(0.5 * n) for lab, n in both.items()}
    # the recorded split's first and last queries
    assert (task.test[0].id, task.test[-1].id, len(task.test)) == ("polarity-0", "polarity-198", 100)


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "half", True, None])
def test_holdout_fraction_must_be_a_share(value):
    with pytest.raises(IclkitError) as e:
        holdout_fraction(value, file="t.yaml")
    assert (e.value.file, e.value.field) == ("t.yaml", "source.holdout")
    assert holdout_fraction(0.3, file="t.yaml") == 0.3
