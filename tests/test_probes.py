"""Label probes and order permutations: invariants on real episodes, seeded reproducibility, uniformity."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from scipy import stats as sps

from iclkit.data.tasks import load_task
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.probes import LABEL_PROBES, parse_label_probes, permute_support, perturb_labels
from iclkit.types import Episode, Example, content_key


@pytest.fixture(scope="module")
def agnews() -> list[Episode]:
    return sample_episodes(load_task("agnews"), EpisodeConfig(shots=(4,), n_episodes=6, n_query=8, seed=0))


@pytest.fixture(scope="module")
def sst2() -> list[Episode]:
    return sample_episodes(load_task("sst2"), EpisodeConfig(shots=(4,), n_episodes=4, n_query=8, seed=0))


def texts(ep: Episode) -> Counter:
    return Counter((e.id, content_key(e)) for e in ep.support)


def toy(labels: tuple[str, ...], shots: int) -> Episode:
    support = tuple(Example(f"{lab}{i}", {"text": f"{lab} text {i}"}, lab) for i in range(shots) for lab in labels)
    query = tuple(Example(f"q{i}", {"text": f"query {i}"}, labels[i % len(labels)]) for i in range(4))
    return Episode(task="toy", index=0, shots=shots, seed=0, labels=labels, support=support, query=query)


@pytest.mark.parametrize("kind", LABEL_PROBES)
def test_every_probe_keeps_texts_order_and_queries(agnews, kind):
    for ep in agnews:
        probed = perturb_labels(ep, kind, seed=3)
        new = probed.episode
        assert [e.id for e in new.support] == [e.id for e in ep.support]  # same demonstrations, same order
        assert texts(new) == texts(ep)
        assert new.query == ep.query and [q.label for q in new.query] == [q.label for q in ep.query]
        assert (new.index, new.labels, new.shots) == (ep.index, ep.labels, ep.shots)
        assert set(probed.probe.support_labels) <= set(ep.labels)
        assert probed.probe.gold_hash == ep.hash
        assert (probed.hash == ep.hash) == (kind == "gold")
        assert perturb_labels(ep, kind, seed=3) == probed  # seeded: the same again


def test_flipped_is_a_derangement_applied_to_every_demonstration(agnews, sst2):
    for ep in agnews + sst2:
        p = perturb_labels(ep, "flipped", seed=0)
        mapping = p.probe.mapping
        assert sorted(mapping) == sorted(ep.labels) and sorted(mapping.values()) == sorted(ep.labels)
        assert all(src != dst for src, dst in mapping.items())
        assert [e.label for e in p.episode.support] == [mapping[e.label] for e in ep.support]
        assert p.episode.hash != ep.hash
    binary = perturb_labels(sst2[0], "flipped", seed=0).probe.mapping
    a, b = sst2[0].labels
    assert binary == {a: b, b: a}


def test_flipped_derangements_are_uniform_over_seeds():
    ep = toy(("a", "b", "c", "d"), 1)
    counts = Counter(tuple(perturb_labels(ep, "flipped", seed=s).probe.mapping.values()) for s in range(1800))
    derangements = [p for p in itertools.permutations("abcd") if all(x != y for x, y in zip("abcd", p))]
    assert set(counts) == set(derangements) and len(derangements) == 9
    assert sps.chisquare([counts[d] for d in derangements]).pvalue > 1e-3


def test_random_labels_are_uniform_and_independent_of_gold():
    labels = ("world", "sports", "business", "sci/tech")
    ep = toy(labels, 4)  # 16 demonstrations, 4 per gold label
    table = {gold: Counter() for gold in labels}
    for seed in range(500):
        for gold, drawn in zip((e.label for e in ep.support), perturb_labels(ep, "random", seed).probe.support_labels):
            table[gold][drawn] += 1
    drawn_totals = [sum(table[g][d] for g in labels) for d in labels]
    assert sps.chisquare(drawn_totals).pvalue > 1e-3  # uniform over the episode's labels
    contingency = [[table[g][d] for d in labels] for g in labels]
    assert sps.chi2_contingency(contingency).pvalue > 1e-3  # the drawn label does not depend on the gold one
    # and the test has power: the gold labels themselves fail independence at once
    assert sps.chi2_contingency([[100 * (g == d) + 1 for d in labels] for g in labels]).pvalue < 1e-6


def test_unrelated_keeps_the_episode_and_maps_labels_to_unrelated_words(agnews):
    ep = agnews[0]
    p = perturb_labels(ep, "unrelated", seed=1)
    assert p.episode == ep and p.episode.hash == ep.hash and p.hash != ep.hash
    words = list(p.probe.mapping.values())
    assert sorted(p.probe.mapping) == sorted(ep.labels) and len(set(words)) == len(words)
    assert not {w.casefold() for w in words} & {lab.casefold() for lab in ep.labels}
    many = toy(tuple(f"l{i}" for i in range(40)) + ("foo",), 1)  # more labels than listed words, one named foo
    mapping = perturb_labels(many, "unrelated", seed=0).probe.mapping
    assert len(set(mapping.values())) == 41 and "foo" not in mapping.values()


def test_permutations_are_distinct_seeded_and_change_only_the_order(agnews):
    for ep in agnews:
        perms = permute_support(ep, 5, seed=0)
        assert len(perms) == 5 and perms[0] == ep
        assert len({p.hash for p in perms}) == 5
        assert len({tuple(e.id for e in p.support) for p in perms}) == 5
        for p in perms:
            assert texts(p) == texts(ep) and p.query == ep.query and p.id == ep.id
        assert permute_support(ep, 5, seed=0) == perms
        assert permute_support(ep, 5, seed=1)[1:] != perms[1:]
    assert permute_support(agnews[0], 1, seed=0) == [agnews[0]]


def test_small_supports_give_every_distinct_order_once():
    two = toy(("a", "b"), 1)  # 2 demonstrations: 2 orders
    assert [tuple(e.id for e in p.support) for p in permute_support(two, 5, seed=0)] == [("a0", "b0"), ("b0", "a0")]
    three = toy(("a", "b", "c"), 1)
    orders = permute_support(three, 10, seed=4)
    assert len(orders) == math.factorial(3) and len({p.hash for p in orders}) == 6
    same = Example("x", {"text": "same"}, "a")
    dup = Episode(task="toy", index=0, shots=2, seed=0, labels=("a", "b"), query=three.query,
                  support=(same, same, Example("y", {"text": "other"}, "b")))
    assert len(permute_support(dup, 10, seed=0)) == 3  # 3!/2! different sequences
    empty = toy(("a", "b"), 0)
    assert permute_support(empty, 4, seed=0) == [empty]


def test_bad_options_name_the_option(agnews):
    with pytest.raises(IclkitError, match="unknown label probe 'shuffled'") as e:
        perturb_labels(agnews[0], "shuffled", seed=0)
    assert e.value.field == "labels"
    with pytest.raises(IclkitError, match="unknown label probe 'nope'"):
        parse_label_probes("gold,nope")
    assert parse_label_probes("gold, random,gold") == ("gold", "random")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(IclkitError) as e:
            permute_support(agnews[0], bad, seed=0)
        assert e.value.field == "orders"
    one_label = toy(("a",), 2)
    with pytest.raises(IclkitError, match="'flipped' needs at least 2 labels") as e:
        perturb_labels(one_label, "flipped", seed=0)
    assert e.value.field == "labels"
    open_answer = Episode(task="qa", index=0, shots=1, seed=0, labels=(), support=one_label.support[:1],
                          query=one_label.query)
    with pytest.raises(IclkitError, match="classification episode"):
        perturb_labels(open_answer, "random", seed=0)
