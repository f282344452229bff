"""Paired comparison of methods against ICL on the same episodes: mean difference, 95% CI, permutation p-value.

Episodes are paired by their hash, so a difference is only ever taken between two methods' accuracies on the
identical support and queries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from iclkit.errors import IclkitError
from iclkit.analysis.stats import mean_ci
from iclkit.types import EpisodeResult

COMPARISON_VERSION = 1


def paired_permutation_p(a: Sequence[float], b: Sequence[float], *, seed: int = 0, n_resamples: int = 9999) -> float:
    """Two-sided p-value of mean(a − b) = 0, swapping each pair's members at random (sign-flip test)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or np.allclose(x, y):
        return 1.0
    res = sps.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
                               vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                               rng=np.random.default_rng(seed))
    return float(res.pvalue)


def compare(results: Sequence[EpisodeResult], *, reference: str = "icl", seed: int = 0) -> list[dict[str, Any]]:
    """One row per (task, shots, method ≠ reference): paired difference in episode accuracy vs ``reference``."""
    acc: dict[tuple[str, int, str], dict[str, float]] = defaultdict(dict)
    for r in results:
        acc[(r.task, r.shots, r.method)][r.episode_hash] = r.accuracy
    rows = []
    for (task, shots, method), mine in sorted(acc.items()):
        ref = acc.get((task, shots, reference))
        if method == reference or ref is None:
            continue
        if set(mine) != set(ref):
            raise IclkitError(f"{task} k={shots}: {method} and {reference} ran on different episodes "
                              f"({len(set(mine) ^ set(ref))} episode hashes differ)")
        keys = sorted(mine)
        a, b = [mine[k] for k in keys], [ref[k] for k in keys]
        diff, lo, hi = mean_ci([x - y for x, y in zip(a, b)], seed=seed)
        rows.append({"task": task, "shots": shots, "method": method, "reference": reference, "n_episodes": len(keys),
                     "accuracy": round(float(np.mean(a)), 4), "reference_accuracy": round(float(np.mean(b)), 4),
                     "difference": round(diff, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
                     "p_value": round(paired_permutation_p(a, b, seed=seed), 4)})
    return rows


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Comparison rows as a Markdown table (difference = method − reference, in accuracy points)."""
    lines = ["| task | shots | method | accuracy | ICL | difference | 95% CI | p (paired perm.) |",
             "|---|---:|---|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['shots']} | {r['method']} | {r['accuracy']:.3f} | "
                     f"{r['reference_accuracy']:.3f} | {r['difference']:+.3f} | "
                     f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['p_value']:.4f} |")
    return "\n".join(lines)
