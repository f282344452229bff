"""Episode-level statistics: means with bootstrap confidence intervals, per-episode metrics."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as sps
from sklearn.metrics import f1_score

from .types import EpisodeResult


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
    gold = [p.gold for p in result.predictions]
    pred = [p.predicted for p in result.predictions]
    return float(f1_score(gold, pred, labels=list(result.labels), average="macro", zero_division=0))
