"""The leaderboard as Markdown: one table of rows, one of paired comparisons."""

from __future__ import annotations

from typing import Any

from iclkit.analysis.paired import format_p
from iclkit.export.formats import register_format
from iclkit.export.leaderboard import Leaderboard


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def to_markdown(lb: Leaderboard) -> str:
    """Rows (and paired comparisons) as Markdown tables."""
    extra = lb.metric_names()
    head = ["model", "task", "method", "shots", "episodes", "queries", "accuracy", "95% CI", "macro-F1", "ECE", *extra,
            "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in ("shots", "episodes", "queries") else "---"
                                                          for h in head) + "|"]
    for r in lb.rows:
        cells = [_fmt(r["model"]), r["task"], r["method"], str(r["shots"]), str(r["n_episodes"]),
                 str(r["n_queries"]), _fmt(r["accuracy"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                 _fmt(r["macro_f1"]), _fmt(r["ece"]),
                 *[_fmt(r.get("metrics", {}).get(m, {}).get("value")) for m in extra], r["run"]]
        lines.append("| " + " | ".join(cells) + " |")
    if lb.comparisons:
        lines += ["", ("Paired differences in accuracy on the same episodes (A − B; 95% bootstrap CI; two-sided "
                       "paired permutation test; unpaired: episodes only one of A and B ran, left out):"), "",
                  "| task | shots | A | B | episodes | unpaired | A − B | 95% CI | p |",
                  "|---|---:|---|---|---:|---:|---:|---|---:|"]
        for c in lb.comparisons:
            a = f"{_fmt(c['a']['model'])} {c['a']['method']}"
            b = f"{_fmt(c['b']['model'])} {c['b']['method']}"
            lines.append(f"| {c['task']} | {c['shots']} | {a} | {b} | {c['n_episodes']} | {c.get('n_dropped', 0)} | "
                         f"{_fmt(c['mean_diff'])} | [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | "
                         f"{format_p(c['p_value'])} |")
    return "\n".join(lines) + "\n"


register_format("md")(to_markdown)
