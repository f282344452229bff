"""Episode-level statistics: bootstrap CIs over episodes, macro-F1, calibration error, paired permutation tests.

Episodes are the unit of resampling: queries within an episode share its demonstrations, so they are not
independent draws, while episodes are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps
from sklearn.metrics import f1_score

from iclkit.types import EpisodeResult


def mean_ci(values: Sequence[float], *, confidence: float = 0.95, seed: int = 0,
            n_resamples: int = 2000) -> tuple[float, float, float]:
    """Mean and a percentile-bootstrap CI over episodes (scipy.stats.bootstrap, seeded)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size < 2 or np.all(x == x[0]):
        return mean, mean, mean
    res = sps.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                        rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def macro_f1(result: EpisodeResult) -> float:
    """Macro-F1 over the episode's own classes (nan for open-answer episodes)."""
    if not result.labels:
        return float("nan")
    return macro_f1_of([p.gold for p in result.predictions], [p.predicted for p in result.predictions], result.labels)


def macro_f1_of(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    """Macro-F1 over ``labels`` (a label never predicted nor gold counts 0, as sklearn's zero_division=0)."""
    return float(f1_score(list(gold), list(predicted), labels=list(labels), average="macro", zero_division=0))


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], *, n_bins: int = 10) -> float:
    """ECE: query-weighted mean |accuracy − confidence| over equal-width confidence bins (nan when empty)."""
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.shape != hit.shape:
        raise ValueError(f"{conf.size} confidences but {hit.size} correctness values")
    if conf.size == 0:
        return float("nan")
    if np.any((conf < 0) | (conf > 1)) or np.any(np.isnan(conf)):
        raise ValueError("confidences must lie in [0, 1]")
    # bin i holds [i/n, (i+1)/n); a confidence of exactly 1 goes into the last bin
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        members = bins == b
        total += members.sum() * abs(hit[members].mean() - conf[members].mean())
    return float(total / conf.size)


def ece(results: Sequence[EpisodeResult], *, n_bins: int = 10) -> float:
    """ECE of the predicted label's probability, pooled over all queries of ``results`` (nan without probs)."""
    conf, hit = [], []
    for r in results:
        for p in r.predictions:
            if p.probs:
                # at the 6 decimals records.jsonl keeps: the summary must follow from the records alone, and
                # float noise between processes must not move a confidence across a bin edge
                conf.append(min(1.0, round(max(p.probs.values()), 6)))
                hit.append(p.correct)
    return expected_calibration_error(conf, hit, n_bins=n_bins)


@dataclass(frozen=True)
class PairedTest:
    """Method A minus method B on the same episodes: mean difference, its bootstrap CI, permutation p-value."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_test(a: Sequence[float], b: Sequence[float], *, seed: int = 0, n_resamples: int = 9999,
                confidence: float = 0.95) -> PairedTest:
    """Two-sided paired permutation test (scipy.stats.permutation_test, sign flips within pairs) of mean(a − b).

    With few pairs scipy enumerates every sign assignment, so the p-value is exact.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size == 0:
        nan = float("nan")
        return PairedTest(0, nan, nan, nan, nan)
    diff = x - y
    mean, lo, hi = mean_ci(diff.tolist(), confidence=confidence, seed=seed)
    if np.all(diff == 0):
        return PairedTest(int(x.size), 0.0, 0.0, 0.0, 1.0)
    res = sps.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
                               vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                               rng=np.random.default_rng(seed))
    return PairedTest(int(x.size), mean, lo, hi, float(min(1.0, res.pvalue)))
