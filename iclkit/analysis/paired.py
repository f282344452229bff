"""The one paired comparison of two methods on the same episodes: mean difference, 95% CI, permutation p-value.

Episodes are paired by their hash, so a difference is only ever taken between two methods' accuracies on the
identical support and queries. Episodes only one side ran are left out of the test and counted as ``n_dropped``,
so a comparison says how much of the data it stands on. Both the run (comparison.json and its printed table) and
the leaderboard go through ``paired_comparison``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from iclkit.analysis.stats import macro_f1, paired_test
from iclkit.analysis.summary import BUDGET_FIELDS, budget_text
from iclkit.types import EpisodeResult

COMPARISON_VERSION = 1  # comparison.json; n_dropped was added without a version change (a new field only)
MIN_PAIRED = 2  # a permutation test on one pair says nothing
DEFAULT_REFERENCE = "icl"  # user-facing default: the method every other one is compared with
Metric = Literal["accuracy", "macro_f1"]  # per-episode values a comparison pairs


@dataclass(frozen=True)
class PairedComparison:
    """A minus B on the episodes both ran: accuracies, mean difference with its CI, p-value, and the counts."""

    n_episodes: int  # episodes paired (in both A and B)
    n_dropped: int  # episodes in only one of the two, left out
    accuracy: float  # mean accuracy of A over the paired episodes
    reference_accuracy: float  # mean accuracy of B over the same episodes
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float], *, seed: int = 0) -> PairedComparison | None:
    """Compare accuracies keyed by episode hash (A − B); None when fewer than ``MIN_PAIRED`` episodes pair.

    An episode with a NaN accuracy (no queries) counts as not run. The test is ``stats.paired_test``: a two-sided
    sign-flip permutation test, exact when every sign assignment can be enumerated.
    """
    a = {h: v for h, v in a.items() if not math.isnan(v)}
    b = {h: v for h, v in b.items() if not math.isnan(v)}
    shared = sorted(set(a) & set(b))
    if len(shared) < MIN_PAIRED:
        return None
    x, y = [a[h] for h in shared], [b[h] for h in shared]
    t = paired_test(x, y, seed=seed)
    return PairedComparison(n_episodes=t.n, n_dropped=len(set(a) ^ set(b)), accuracy=sum(x) / len(x),
                            reference_accuracy=sum(y) / len(y), difference=t.mean_diff, ci_low=t.ci_low,
                            ci_high=t.ci_high, p_value=t.p_value)


def episode_scores(results: Sequence[EpisodeResult], metric: Metric = "accuracy"
                   ) -> dict[tuple[str, int, str], dict[str, float]]:
    """(task, shots, method) → episode hash → the episode's accuracy (or macro-F1); a method run under several
    prompts scores an episode by the mean over its prompts, so it pairs with every other method episode by episode."""
    values: dict[tuple[str, int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        values[(r.task, r.shots, r.method)][r.episode_hash].append(r.accuracy if metric == "accuracy" else macro_f1(r))
    return {key: {h: sum(v) / len(v) for h, v in eps.items()} for key, eps in values.items()}


def compare(results: Sequence[EpisodeResult], *, reference: str = DEFAULT_REFERENCE, seed: int = 0,
            budgets: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
            metric: Metric = "accuracy") -> list[dict[str, Any]]:
    """One row per (task, shots, method ≠ reference): paired difference in episode accuracy (or ``metric``) vs
    ``reference``; with ``budgets`` (task, method) → data budget, each row also carries the method's, so a
    difference is never read without what the method learned from outside the episodes."""
    acc = episode_scores(results, metric)
    rows = []
    for (task, shots, method), mine in sorted(acc.items()):
        ref = acc.get((task, shots, reference))
        if method == reference or ref is None:
            continue
        c = paired_comparison(mine, ref, seed=seed)
        if c is None:
            continue
        rows.append({"task": task, "shots": shots, "method": method, "reference": reference,
                     "n_episodes": c.n_episodes, "n_dropped": c.n_dropped, "accuracy": round(c.accuracy, 4),
                     "reference_accuracy": round(c.reference_accuracy, 4), "difference": round(c.difference, 4),
                     "ci_low": round(c.ci_low, 4), "ci_high": round(c.ci_high, 4), "p_value": round(c.p_value, 4)})
        budget = (budgets or {}).get((task, method))
        if budget is not None:
            rows[-1].update({k: budget.get(k) for k in BUDGET_FIELDS})
    return rows


def format_p(p: float | None) -> str:
    """A p-value for a table: three decimals, ``< 0.001`` below that (a permutation p is never 0), ``–`` if absent."""
    if p is None or math.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Comparison rows as a Markdown table (difference = method − reference, in accuracy points)."""
    reference = rows[0]["reference"] if rows else DEFAULT_REFERENCE
    budgets = any("meta_train" in r for r in rows)  # rows of a run carry the method's data budget
    lines = [f"| task | shots | method |{' meta-training data |' if budgets else ''} episodes | accuracy | {reference} "
             f"| difference | 95% CI | p (paired perm.) |",
             f"|---|---:|---|{'---|' if budgets else ''}---:|---:|---:|---:|---|---:|"]
    for r in rows:
        dropped = r.get("n_dropped", 0)
        episodes = f"{r['n_episodes']} (+{dropped} unpaired)" if dropped else str(r["n_episodes"])
        budget = f" {budget_text(r)} |" if budgets else ""
        lines.append(f"| {r['task']} | {r['shots']} | {r['method']} |{budget} {episodes} | {r['accuracy']:.3f} | "
                     f"{r['reference_accuracy']:.3f} | {r['difference']:+.3f} | "
                     f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {format_p(r['p_value'])} |")
    return "\n".join(lines)
