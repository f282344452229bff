"""The leaderboard as Markdown: one table of rows (with the spread across prompts when a row ran under several),
one of paired comparisons, one of calibrated ICL outputs against raw ICL."""

from __future__ import annotations

from typing import Any

from iclkit.analysis.paired import format_p
from iclkit.analysis.summary import budget_text, spread_text
from iclkit.analysis.uses import uses_tables
from iclkit.export.formats import register_format
from iclkit.export.leaderboard import Leaderboard


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _budget(entry: Any) -> str:
    """`` (its meta-training data)`` for a comparison entry of a run that recorded it, else nothing."""
    return f" ({budget_text(entry)})" if entry.get("meta_train") is not None else ""


def _run(lb: Leaderboard, entry: Any) -> str:
    """`` [run]`` after a comparison entry when the board merges several runs (e.g. --demos random and similar)."""
    return f" [{entry['run']}]" if len(lb.runs) > 1 else ""


def to_markdown(lb: Leaderboard) -> str:
    """Rows (and paired comparisons) as Markdown tables."""
    extra = lb.metric_names()
    spread = any(r.get("n_prompts") for r in lb.rows)
    head = ["model", "task", "method", "shots", "episodes", "queries", "accuracy", "95% CI",
            *(["across prompts: min–max (sd)"] if spread else []), "macro-F1", "ECE", "meta-training data", *extra,
            "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in ("shots", "episodes", "queries") else "---"
                                                          for h in head) + "|"]
    for r in lb.rows:
        cells = [_fmt(r["model"]), r["task"], r["method"], str(r["shots"]), str(r["n_episodes"]),
                 str(r["n_queries"]), _fmt(r["accuracy"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                 *([spread_text(r)] if spread else []), _fmt(r["macro_f1"]), _fmt(r["ece"]), budget_text(r),
                 *[_fmt(r.get("metrics", {}).get(m, {}).get("value")) for m in extra], r["run"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Runs (`iclkit verify RUN_DIR`: a seeded sample re-scored under another batch size, thread count and "
                  "process count, without score cache, and compared with the run's records):", ""]
    lines += [f"- {r['name']} ({_fmt(r.get('model'))}, seed {_fmt(r.get('seed'))}): "
              f"{r.get('verified') or 'not verified'}" for r in lb.runs]
    if lb.comparisons:
        lines += ["", ("Paired differences in accuracy on the same episodes (A − B; 95% bootstrap CI; two-sided "
                       "paired permutation test; unpaired: episodes only one of A and B ran, left out; in "
                       "parentheses: each side's meta-training data):"), "",
                  "| task | shots | A | B | episodes | unpaired | A − B | 95% CI | p |",
                  "|---|---:|---|---|---:|---:|---:|---|---:|"]
        for c in lb.comparisons:
            a, b = (f"{_fmt(c[s]['model'])} {c[s]['method']}" + _budget(c[s]) + _run(lb, c[s]) for s in ("a", "b"))
            lines.append(f"| {c['task']} | {c['shots']} | {a} | {b} | {c['n_episodes']} | {c.get('n_dropped', 0)} | "
                         f"{_fmt(c['mean_diff'])} | [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | "
                         f"{format_p(c['p_value'])} |")
    if lb.calibration:
        lines += ["", ("Calibration: each calibrated ICL output minus its raw output, same run and episodes "
                       "(accuracy and macro-F1; 95% bootstrap CI; two-sided paired permutation test; batch "
                       "calibration is transductive: it uses the episode's other unlabelled queries):"), "",
                  "| model | task | shots | method | vs | episodes | Δ accuracy | 95% CI | p | Δ macro-F1 | 95% CI | p "
                  "| run |", "|---|---|---:|---|---|---:|---:|---|---:|---:|---|---:|---|"]
        for c in lb.calibration:
            name = c["method"] + (" (transductive)" if c["transductive"] else "")
            lines.append(f"| {_fmt(c['model'])} | {c['task']} | {c['shots']} | {name} | {c['reference']} | "
                         f"{c['n_episodes']} | {c['mean_diff']:+.3f} | [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | "
                         f"{format_p(c['p_value'])} | {c['f1_diff']:+.3f} | [{c['f1_ci_low']:+.3f}, "
                         f"{c['f1_ci_high']:+.3f}] | {format_p(c['f1_p_value'])} | {c['run']} |")
    if lb.uses:  # runs with label probes or orders: the same tables as their summary.md
        lines += ["", uses_tables(lb.uses)]
    return "\n".join(lines) + "\n"


register_format("md")(to_markdown)
