"""Turning episode results into per-query records, summary rows, a Markdown table, and run files."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

from iclkit.analysis.stats import ece, macro_f1, mean_ci
from iclkit.types import EpisodeResult

SUMMARY_VERSION = 1


def records(result: EpisodeResult) -> list[dict[str, Any]]:
    """One JSON-able record per query."""
    out = []
    for p in result.predictions:
        rec = {"task": result.task, "method": result.method, "shots": result.shots, "episode_id": result.episode_id,
               "episode_hash": result.episode_hash, "query_id": p.query_id, "gold": p.gold,
               "prediction": p.predicted, "correct": p.correct}
        if p.scores:
            rec["scores"] = {k: round(v, 6) for k, v in p.scores.items()}
            rec["probs"] = {k: round(v, 6) for k, v in p.probs.items()}
        rec.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in p.extra.items()})
        out.append(rec)
    return out


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def summarize(results: Sequence[EpisodeResult], seed: int = 0,
              query_fields: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """Summary rows per (task, method, shots): accuracy with a 95% bootstrap CI over episodes, macro-F1, ECE, and
    the mean of each numeric per-query field a method declares (``query_fields[method]``, e.g. ICL's label_mass)."""
    groups: dict[tuple[str, str, int], list[EpisodeResult]] = defaultdict(list)
    for r in results:
        groups[(r.task, r.method, r.shots)].append(r)
    rows = []
    for (task, method, shots), group in sorted(groups.items()):
        acc, lo, hi = mean_ci([r.accuracy for r in group], seed=seed)
        f1 = mean_ci([macro_f1(r) for r in group], seed=seed)[0]
        row: dict[str, Any] = {
            "task": task, "method": method, "shots": shots, "n_episodes": len(group),
            "n_queries": sum(len(r.predictions) for r in group),
            "accuracy": _clean(acc), "ci_low": _clean(lo), "ci_high": _clean(hi), "macro_f1": _clean(f1),
            "ece": _clean(ece(group)),
        }
        for name in (query_fields or {}).get(method, ()):
            values = [p.extra[name] for r in group for p in r.predictions if name in p.extra]
            if values:
                row[name] = _clean(sum(values) / len(values))
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Summary rows as a Markdown table."""
    def fmt(x: Any) -> str:
        return "–" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    lines = ["| task | method | shots | episodes | queries | accuracy | 95% CI | macro-F1 | ECE |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        ci = f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        lines.append(f"| {r['task']} | {r['method']} | {r['shots']} | {r['n_episodes']} | {r['n_queries']} | "
                     f"{fmt(r['accuracy'])} | {ci} | {fmt(r['macro_f1'])} | {fmt(r.get('ece'))} |")
    return "\n".join(lines)
