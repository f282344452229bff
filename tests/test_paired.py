"""The one paired comparison against hand-computed references: episode pairing, counts, exact sign-flip p-values."""

from __future__ import annotations

import itertools

import pytest

from iclkit.analysis.paired import compare, comparison_table, format_p, paired_comparison
from iclkit.types import EpisodeResult, Prediction


def _episode(method: str, h: str, correct: int, n: int = 4, shots: int = 1) -> EpisodeResult:
    """An episode result with ``correct`` of ``n`` queries right."""
    preds = tuple(Prediction(f"q{i}", "a", "a" if i < correct else "b", i < correct) for i in range(n))
    return EpisodeResult(f"t/k{shots}/{h}", h, "t", method, shots, ("a", "b"), preds)


def _sign_flip_p(diffs: list[float]) -> float:
    """Two-sided p of mean(diff) = 0 by enumerating every sign assignment (independent of scipy)."""
    observed = abs(sum(diffs))
    flips = list(itertools.product((1, -1), repeat=len(diffs)))
    extreme = sum(abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12 for signs in flips)
    return extreme / len(flips)


# correct answers out of 4 per episode; icl ran h0..h7, knn ran h0..h5 and h8, h9: six pairs, four unpaired
ICL = {"h0": 2, "h1": 1, "h2": 3, "h3": 2, "h4": 2, "h5": 1, "h6": 4, "h7": 0}
KNN = {"h0": 3, "h1": 2, "h2": 3, "h3": 4, "h4": 1, "h5": 3, "h8": 4, "h9": 4}


def test_compare_pairs_by_episode_hash_against_hand_computation() -> None:
    results = [_episode("icl", h, c) for h, c in ICL.items()] + [_episode("knn", h, c) for h, c in KNN.items()]
    (row,) = compare(results, seed=3)
    # by hand over h0..h5: knn − icl = (+1, +1, 0, +2, −1, +2) / 4 queries
    diffs = [0.25, 0.25, 0.0, 0.5, -0.25, 0.5]
    assert (row["task"], row["shots"], row["method"], row["reference"]) == ("t", 1, "knn", "icl")
    assert row["n_episodes"] == 6 and row["n_dropped"] == 4
    assert row["difference"] == pytest.approx(1.25 / 6, abs=1e-4)
    assert row["accuracy"] == pytest.approx(16 / 24, abs=1e-4)  # 3+2+3+4+1+3 of 24 queries
    assert row["reference_accuracy"] == pytest.approx(11 / 24, abs=1e-4)  # 2+1+3+2+2+1 of 24
    assert row["p_value"] == pytest.approx(_sign_flip_p(diffs), abs=1e-4)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    # the exact p does not depend on the seed; only the bootstrap CI does
    assert compare(results, seed=0)[0]["p_value"] == row["p_value"]


def test_pairing_ignores_order_and_unpaired_episodes() -> None:
    a = {h: c / 4 for h, c in KNN.items()}
    b = {h: c / 4 for h, c in ICL.items()}
    c = paired_comparison(a, b)
    shuffled = paired_comparison(dict(reversed(list(a.items()))), {h: b[h] for h in ("h0", "h1", "h2", "h3", "h4",
                                                                                       "h5")})
    assert c is not None and shuffled is not None
    assert (shuffled.n_episodes, shuffled.n_dropped) == (6, 2)  # only knn's h8, h9 are unpaired now
    assert (shuffled.difference, shuffled.p_value) == (c.difference, c.p_value)
    # swapping A and B flips the difference, not the p-value or the counts
    back = paired_comparison(b, a)
    assert back is not None and back.difference == pytest.approx(-c.difference)
    assert (back.p_value, back.n_episodes, back.n_dropped) == (c.p_value, c.n_episodes, c.n_dropped)


def test_too_few_pairs_give_no_row() -> None:
    assert paired_comparison({"h0": 1.0, "h1": 0.5}, {"h1": 0.5, "h2": 0.0}) is None  # one pair
    disjoint = [_episode("icl", f"x{i}", 2) for i in range(5)] + [_episode("knn", f"y{i}", 3) for i in range(5)]
    assert compare(disjoint) == []
    # an episode without queries (nan accuracy) counts as not run
    nan_ep = EpisodeResult("t/k1/h9", "h9", "t", "knn", 1, ("a", "b"), ())
    (row,) = compare([_episode("icl", h, c) for h, c in ICL.items()] +
                     [_episode("knn", h, c) for h, c in KNN.items() if h != "h9"] + [nan_ep])
    assert (row["n_episodes"], row["n_dropped"]) == (6, 3)


def test_small_p_values_print_as_below_a_thousandth() -> None:
    # knn right on every query, icl on none, in 12 episodes: exact p = 2 / 2**12 = 0.000488
    results = [_episode("icl", f"h{i}", 0) for i in range(12)] + [_episode("knn", f"h{i}", 4) for i in range(12)]
    (row,) = compare(results)
    assert row["p_value"] == pytest.approx(_sign_flip_p([1.0] * 12), abs=1e-4)
    table = comparison_table([row])
    assert table.splitlines()[-1].rsplit("|", 2)[1].strip() == "< 0.001"  # the p column, not 0.000
    assert [format_p(p) for p in (0.0004, 0.000999, 0.001, 0.0123, 1.0, None)] == \
        ["< 0.001", "< 0.001", "0.001", "0.012", "1.000", "–"]


def test_table_counts_unpaired_episodes() -> None:
    results = [_episode("icl", h, c) for h, c in ICL.items()] + [_episode("knn", h, c) for h, c in KNN.items()]
    table = comparison_table(compare(results))
    assert "| t | 1 | knn | 6 (+4 unpaired) |" in table
