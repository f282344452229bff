"""What each learner uses from its support set: accuracy under label probes, label reliance, order sensitivity, and
the variance decomposition of each cell, computed from every result of a run (``--labels``, ``--orders``).

The unit is the episode, as in the main summary: an episode's accuracy under a probe is its mean over the
permutations and prompts it ran with, and probes pair with gold by episode id (the same demonstrations and queries).

- ``labels``: per task × method × shots, accuracy under each probe with a 95% bootstrap CI over episodes, and the
  **label reliance** acc(gold) − acc(random), paired by episode, with a bootstrap CI and a permutation p-value
  (``analysis.stats.paired_test``). ``chance`` is 1 / the episode's number of labels.
- ``orders``: per cell of an order-sensitive learner run with P > 1 orders (gold labels): mean accuracy over
  permutations, the mean within-episode range (max − min accuracy over its orders), and the fraction of queries
  whose prediction changes with the order; an order-invariant learner's row says so and ran the drawn order only.
- ``variance``: ``analysis.variance.decompose_records`` on the gold records of each cell (demonstrations, template,
  order, query, residual); a cell it cannot decompose (e.g. one episode) gets ``components: null`` and the reason.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

from iclkit.analysis.stats import mean_ci, paired_test
from iclkit.analysis.variance import COMPONENTS, decompose_records
from iclkit.errors import IclkitError
from iclkit.types import EpisodeResult

Cell = tuple[str, str, int]


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _group(results: Sequence[EpisodeResult], key: Callable[[EpisodeResult], Any]) -> dict[Any, list[EpisodeResult]]:
    out: dict[Any, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        out[key(r)].append(r)
    return out


def _probe(r: EpisodeResult) -> str:
    return str(r.info.get("labels", "gold"))


def _cell(r: EpisodeResult) -> Cell:
    return (r.task, r.method, r.shots)


def episode_accuracy(results: Sequence[EpisodeResult]) -> dict[str, float]:
    """Episode id → accuracy averaged over the episode's results (its permutations and prompts)."""
    return {eid: _mean([r.accuracy for r in rs]) for eid, rs in _group(results, lambda r: r.episode_id).items()}


def label_rows(results: Sequence[EpisodeResult], *, seed: int = 0) -> list[dict[str, Any]]:
    """Accuracy under each label probe and the label reliance acc(gold) − acc(random), per cell."""
    rows = []
    for (task, method, shots), group in sorted(_group(results, _cell).items()):
        by_probe = {kind: episode_accuracy(rs) for kind, rs in _group(group, _probe).items()}
        probes = {}
        for kind, accs in by_probe.items():
            acc, lo, hi = mean_ci(list(accs.values()), seed=seed)
            probes[kind] = {"accuracy": _num(acc), "ci_low": _num(lo), "ci_high": _num(hi), "n_episodes": len(accs)}
        reliance = None
        if "gold" in by_probe and "random" in by_probe:
            ids = sorted(set(by_probe["gold"]) & set(by_probe["random"]))
            t = paired_test([by_probe["gold"][i] for i in ids], [by_probe["random"][i] for i in ids], seed=seed)
            reliance = {"mean": _num(t.mean_diff), "ci_low": _num(t.ci_low), "ci_high": _num(t.ci_high),
                        "p_value": _num(t.p_value), "n_episodes": t.n}
        n_labels = len(group[0].labels)
        rows.append({"task": task, "method": method, "shots": shots,
                     "chance": _num(1 / n_labels) if n_labels else None, "probes": probes, "reliance": reliance})
    return rows


def order_rows(results: Sequence[EpisodeResult], *, seed: int = 0,
               invariant: Mapping[str, bool] | None = None) -> list[dict[str, Any]]:
    """Order sensitivity per cell, from gold-label results (``invariant``: ``task/method`` → order-invariant)."""
    rows = []
    gold = [r for r in results if _probe(r) == "gold"]
    for (task, method, shots), group in sorted(_group(gold, _cell).items()):
        row: dict[str, Any] = {"task": task, "method": method, "shots": shots}
        if (invariant or {}).get(f"{task}/{method}"):
            rows.append({**row, "order_invariant": True, "n_orders": 1})
            continue
        by_episode = _group(group, lambda r: r.episode_id)
        means, ranges, changed, n_queries, n_orders = [], [], 0, 0, 0
        for rs in by_episode.values():
            by_perm = _group(rs, lambda r: r.info.get("permutation", 0))
            accs = [_mean([r.accuracy for r in ps]) for ps in by_perm.values()]
            means.append(_mean(accs))
            n_orders = max(n_orders, len(by_perm))
            if len(by_perm) < 2:
                continue
            ranges.append(max(accs) - min(accs))
            predicted: dict[tuple[Any, str], set[str]] = defaultdict(set)
            for r in rs:
                for p in r.predictions:
                    predicted[(r.info.get("prompt"), p.query_id)].add(str(p.predicted))
            changed += sum(len(v) > 1 for v in predicted.values())
            n_queries += len(predicted)
        acc, lo, hi = mean_ci(means, seed=seed)
        rows.append({**row, "order_invariant": False, "n_orders": n_orders, "accuracy": _num(acc),
                     "ci_low": _num(lo), "ci_high": _num(hi),
                     "mean_range": _num(_mean(ranges)) if ranges else None,
                     "changed_fraction": _num(changed / n_queries) if n_queries else None})
    return rows


def variance_rows(results: Sequence[EpisodeResult]) -> list[dict[str, Any]]:
    """The variance decomposition of each cell's gold records, or ``components: null`` with the reason."""
    rows = []
    gold = [r for r in results if _probe(r) == "gold"]
    for (task, method, shots), group in sorted(_group(gold, _cell).items()):
        recs = [{"task": r.task, "method": r.method, "shots": r.shots, "episode_id": r.episode_id,
                 "query_id": p.query_id, "correct": float(p.correct), "permutation": r.info.get("permutation", 0),
                 "prompt": r.info.get("prompt", "")} for r in group for p in r.predictions]
        try:
            rows.append(decompose_records(recs)[0].to_dict())
        except IclkitError as e:
            rows.append({"task": task, "method": method, "shots": shots, "components": None, "reason": e.message})
    return rows


def uses_summary(results: Sequence[EpisodeResult], *, seed: int = 0, invariant: Mapping[str, bool] | None = None,
                 n_orders: int = 1) -> dict[str, Any]:
    """summary.json's ``labels``, ``orders`` (only when run with P > 1) and ``variance`` entries."""
    out: dict[str, Any] = {"labels": label_rows(results, seed=seed)}
    if n_orders > 1:
        out["orders"] = order_rows(results, seed=seed, invariant=invariant)
    out["variance"] = variance_rows(results)
    return out


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def uses_tables(uses: Mapping[str, Any]) -> str:
    """summary.md's tables for ``uses_summary``: label probes, orders, variance components (shares)."""
    probes = list(dict.fromkeys(k for row in uses.get("labels", []) for k in row["probes"]))
    lines = ["What each learner uses: accuracy under each label probe (95% CI over episodes) and label reliance "
             "acc(gold) − acc(random), paired by episode:", "",
             "| task | method | shots | chance | " + " | ".join(probes) + " | reliance [95% CI] | p |",
             "|---|---|---:|---:|" + "---|" * len(probes) + "---|---:|"]
    for row in uses.get("labels", []):
        cells = []
        for k in probes:
            p = row["probes"].get(k)
            cells.append("–" if p is None else f"{_f(p['accuracy'])} [{_f(p['ci_low'])}, {_f(p['ci_high'])}]")
        rel = row["reliance"]
        rel_text = "–" if rel is None else f"{_f(rel['mean'])} [{_f(rel['ci_low'])}, {_f(rel['ci_high'])}]"
        lines.append(f"| {row['task']} | {row['method']} | {row['shots']} | {_f(row['chance'])} | "
                     + " | ".join(cells) + f" | {rel_text} | {_f(rel and rel['p_value'])} |")
    if uses.get("orders"):
        lines += ["", "Demonstration order (gold labels): mean over orders, mean within-episode range (max − min), "
                  "fraction of queries whose prediction changes with the order:", "",
                  "| task | method | shots | orders | accuracy [95% CI] | mean range | changed |",
                  "|---|---|---:|---:|---|---:|---:|"]
        for row in uses["orders"]:
            if row["order_invariant"]:
                lines.append(f"| {row['task']} | {row['method']} | {row['shots']} | 1 | order-invariant | 0 | 0 |")
            else:
                lines.append(f"| {row['task']} | {row['method']} | {row['shots']} | {row['n_orders']} | "
                             f"{_f(row['accuracy'])} [{_f(row['ci_low'])}, {_f(row['ci_high'])}] | "
                             f"{_f(row['mean_range'])} | {_f(row['changed_fraction'])} |")
    if uses.get("variance"):
        lines += ["", "Variance of per-query correctness (gold labels), share of each component "
                  "(ANOVA method-of-moments estimator, iclkit.analysis.variance):", "",
                  "| task | method | shots | total | " + " | ".join(COMPONENTS) + " |",
                  "|---|---|---:|---:|" + "---:|" * len(COMPONENTS)]
        for row in uses["variance"]:
            comps = row.get("components")
            shares = [("–" if comps is None else _f(comps[c]["share"])) for c in COMPONENTS]
            total = _f(row.get("total")) if comps is not None else f"– ({row.get('reason', '')})"
            lines.append(f"| {row['task']} | {row['method']} | {row['shots']} | {total} | " + " | ".join(shares) + " |")
    return "\n".join(lines)
