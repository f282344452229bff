"""The overlaps between the registered tasks' texts, measured on the shared data, that docs/tasks-and-prompts.md
("Corpora") states and the task files' ``corpus:`` declare: SST-2's sentences are SST-5's, movie-sentiment's come
from the same reviews, and tasks declared in different corpora share no text.

These are data facts, not tests of iclkit's logic: the counts are measured on the shared data snapshot and have no
reference but that snapshot (they change if the data does). Every test here is marked ``data_fact``; ``pytest -m
"not data_fact"`` runs the logic alone. What iclkit does with these overlaps is tested against references elsewhere
(no-leakage in tests/test_protocols.py, the support/query exclusion in tests/test_episodes.py)."""

from __future__ import annotations

import itertools
import re

import pytest

from iclkit.data.tasks import load_task, read_spec, registry

pytestmark = pytest.mark.data_fact  # snapshot counts (see the module docstring)


def exact(e) -> str:
    """Whitespace- and case-normalized text."""
    return " ".join(" ".join(v for _, v in sorted(e.fields.items())).casefold().split())


def alnum(e) -> str:
    """Letters and digits only (SST's tokenized ``it 's`` = Pang & Lee's ``it's``)."""
    return re.sub(r"[\W_]+", "", " ".join(v for _, v in sorted(e.fields.items())).casefold())


@pytest.fixture(scope="module")
def tasks(data_dir):
    specs = {name: read_spec(path) for name, path in registry().items()}
    return {name: load_task(name) for name, s in specs.items() if s.type == "classification"}


def test_sst2_sentences_are_sst5_sentences_split_by_split(tasks):
    sst2, sst5 = tasks["sst2"], tasks["sst5"]
    for split in ("train", "test"):
        a = {exact(e) for e in getattr(sst2, split)}
        b = {exact(e) for e in getattr(sst5, split)}
        assert a <= b, f"{split}: {len(a - b)} SST-2 sentences not in SST-5"
    assert len({exact(e) for e in sst2.train}) == 6911 and len({exact(e) for e in sst2.test}) == 1821
    assert len({exact(e) for e in sst2.train} & {exact(e) for e in sst5.test}) == 2  # 'no. .', "what 's next ?"


def test_movie_sentiment_sentences_come_from_the_sst_reviews(tasks):
    movie = [*tasks["movie-sentiment"].train, *tasks["movie-sentiment"].test]
    sst5 = [*tasks["sst5"].train, *tasks["sst5"].test]
    assert len(movie) == 200
    sst5_exact, sst5_alnum = {exact(s) for s in sst5}, {alnum(s) for s in sst5}
    assert sum(exact(e) in sst5_exact for e in movie) == 99
    assert sum(alnum(e) in sst5_alnum for e in movie) == 170  # the rest: SST split them into sentences


def test_tasks_of_different_corpora_share_no_text_and_same_corpus_ones_are_declared(tasks):
    corpus = {name: t.spec.corpus_name for name, t in tasks.items()}
    assert corpus["sst2"] == corpus["sst5"] == corpus["movie-sentiment"] == "rotten-tomatoes"
    assert len({corpus[n] for n in ("agnews", "cb", "dbpedia", "rte", "trec", "sst2")}) == 6
    texts = {name: {alnum(e) for e in (*t.train, *t.test)} for name, t in tasks.items()}
    for a, b in itertools.combinations(sorted(tasks), 2):
        shared = len(texts[a] & texts[b])
        assert (shared > 0) == (corpus[a] == corpus[b]), f"{a} ∩ {b}: {shared} texts"


@pytest.mark.parametrize("name,train_test", [("sst2", 2), ("sst5", 2), ("trec", 11), ("agnews", 0), ("dbpedia", 0)])
def test_train_test_overlap_within_a_task(tasks, name, train_test):
    t = tasks[name]
    assert len({exact(e) for e in t.train} & {exact(e) for e in t.test}) == train_test
