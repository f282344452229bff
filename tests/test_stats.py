"""Statistics against brute-force references: ECE by explicit binning, exact permutation p-values, bootstrap CIs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from iclkit.analysis.summary import markdown_table, summarize
from iclkit.analysis.stats import ece, expected_calibration_error, macro_f1, mean_ci, paired_test
from iclkit.types import EpisodeResult, Prediction


def _ece_reference(conf: list[float], hit: list[bool], n_bins: int) -> float:
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i, c in enumerate(conf) if lo <= c < hi or (b == n_bins - 1 and c == 1.0)]
        if idx:
            acc = sum(hit[i] for i in idx) / len(idx)
            avg = sum(conf[i] for i in idx) / len(idx)
            total += len(idx) / len(conf) * abs(acc - avg)
    return total


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_explicit_binning(seed: int, n_bins: int) -> None:
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.5, 1.0, size=200).round(3).tolist() + [1.0, 0.5]
    hit = (rng.uniform(size=len(conf)) < 0.7).tolist()
    assert expected_calibration_error(conf, hit, n_bins=n_bins) == pytest.approx(_ece_reference(conf, hit, n_bins))


def test_ece_known_values() -> None:
    assert expected_calibration_error([1.0] * 4, [True] * 4) == 0.0
    assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)
    assert expected_calibration_error([0.9] * 10, [False] * 10) == pytest.approx(0.9)
    assert math.isnan(expected_calibration_error([], []))
    with pytest.raises(ValueError):
        expected_calibration_error([1.5], [True])


def _result(correct: list[bool], confidence: float, episode: int = 0) -> EpisodeResult:
    preds = tuple(Prediction(query_id=f"q{i}", gold="a", predicted="a" if c else "b", correct=c,
                             scores={"a": 0.0, "b": -1.0}, probs={"a": confidence, "b": 1 - confidence})
                  for i, c in enumerate(correct))
    return EpisodeResult(episode_id=f"t/k1/e{episode}", episode_hash=f"h{episode}", task="t", method="m", shots=1,
                         labels=("a", "b"), predictions=preds)


def test_ece_pools_queries_of_all_episodes() -> None:
    results = [_result([True, True, False, False], 0.75, 0), _result([True, True, True, True], 0.75, 1)]
    # 8 queries at confidence 0.75 (max of the two probs), 6 correct: perfectly calibrated
    assert ece(results) == pytest.approx(0.0)
    assert ece([_result([False] * 4, 0.75)]) == pytest.approx(0.75)


def _exact_p(a: np.ndarray, b: np.ndarray) -> float:
    diff = a - b
    observed = abs(diff.mean())
    hits = 0
    signs = list(itertools.product([1, -1], repeat=len(diff)))
    for s in signs:
        if abs((np.array(s) * diff).mean()) >= observed - 1e-12:
            hits += 1
    return hits / len(signs)


@pytest.mark.parametrize("seed", range(4))
def test_paired_permutation_test_is_exact_for_small_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 9, size=8) / 8
    b = np.clip(a - rng.integers(-1, 4, size=8) / 8, 0, 1)
    t = paired_test(a, b, seed=seed)
    assert t.n == 8
    assert t.mean_diff == pytest.approx(float((a - b).mean()))
    assert t.p_value == pytest.approx(_exact_p(a, b))
    assert t.ci_low <= t.mean_diff <= t.ci_high


def test_paired_test_edge_cases() -> None:
    same = paired_test([0.5, 0.75, 1.0], [0.5, 0.75, 1.0])
    assert (same.mean_diff, same.p_value) == (0.0, 1.0)
    far = paired_test([1.0] * 12, [0.0] * 12)
    assert far.p_value < 0.001 and far.mean_diff == 1.0
    assert paired_test([float("nan"), 1.0, 0.0], [0.0, 0.0, 0.0]).n == 2
    with pytest.raises(ValueError):
        paired_test([1.0], [1.0, 0.0])


def test_mean_ci_is_seeded_and_brackets_the_mean() -> None:
    values = [0.5, 0.625, 0.75, 0.875, 0.25, 1.0, 0.5, 0.75]
    assert mean_ci(values, seed=3) == mean_ci(values, seed=3)
    mean, lo, hi = mean_ci(values)
    assert mean == pytest.approx(np.mean(values)) and lo < mean < hi
    assert 0.25 <= lo and hi <= 1.0
    assert mean_ci([0.5]) == (0.5, 0.5, 0.5)


def test_macro_f1_matches_hand_computation() -> None:
    preds = (Prediction("1", "a", "a", True), Prediction("2", "a", "b", False), Prediction("3", "b", "b", True),
             Prediction("4", "b", "b", True))
    r = EpisodeResult("t/k0/e0", "h", "t", "m", 0, ("a", "b"), preds)
    # a: P=1, R=.5, F1=2/3; b: P=2/3, R=1, F1=.8
    assert macro_f1(r) == pytest.approx((2 / 3 + 0.8) / 2)


def test_summary_rows_carry_ece_and_counts() -> None:
    results = [_result([True, False, True, True], 0.9, i) for i in range(3)]
    (row,) = summarize(results)
    assert row["n_episodes"] == 3 and row["n_queries"] == 12
    assert row["ece"] == pytest.approx(round(abs(0.75 - 0.9), 4))
    assert "| ECE |" in markdown_table([row]) and "0.150" in markdown_table([row])
