"""Turning episode results into per-query records, summary rows, a Markdown table, and run files."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Mapping, Sequence

from iclkit.analysis.stats import ece, macro_f1, mean_ci
from iclkit.smlmt import SmlmtBudget
from iclkit.types import EpisodeResult

SUMMARY_VERSION = 1


# The data budget fields of a method (iclkit.protocols.budget_fields): per record the first three, per summary row all.
RECORD_BUDGET_FIELDS = ("meta_train", "n_meta_texts", "pretrained")
BUDGET_FIELDS = ("meta_train", "n_meta_texts", "meta_tasks", "meta_classes", "pretrained")


def records(result: EpisodeResult, budget: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One JSON-able record per query (with the result's ``info``: ``prompt`` and ``prompt_hash`` for a prompted
    method); ``budget``: the method's data budget, appended to each record."""
    out = []
    for p in result.predictions:
        rec = {"task": result.task, "method": result.method, "shots": result.shots, "episode_id": result.episode_id,
               "episode_hash": result.episode_hash, "query_id": p.query_id, "gold": p.gold,
               "prediction": p.predicted, "correct": p.correct, **result.info}
        if p.scores:
            rec["scores"] = {k: round(v, 6) for k, v in p.scores.items()}
            rec["probs"] = {k: round(v, 6) for k, v in p.probs.items()}
        rec.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in p.extra.items()})
        if budget is not None:
            rec.update({k: budget.get(k) for k in RECORD_BUDGET_FIELDS})
        out.append(rec)
    return out


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def summarize(results: Sequence[EpisodeResult], seed: int = 0,
              query_fields: Mapping[str, Sequence[str]] | None = None,
              budgets: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Summary rows per (task, method, shots): accuracy with a 95% bootstrap CI over episodes, macro-F1, ECE, the
    mean of each numeric per-query field a method declares (``query_fields[method]``, e.g. ICL's label_mass), and
    the method's data budget (``budgets[(task, method)]``: protocol, labelled texts, tasks, classes, backbone)."""
    groups: dict[tuple[str, str, int], list[EpisodeResult]] = defaultdict(list)
    for r in results:
        groups[(r.task, r.method, r.shots)].append(r)
    rows = []
    for (task, method, shots), group in sorted(groups.items()):
        # a method run under several prompts: an episode's score is its mean over the prompts (the unit stays the
        # episode, so the CI and the pairing with other methods are over episodes, as for one prompt)
        by_episode = _split(group, lambda r: r.episode_hash)
        acc, lo, hi = mean_ci([_mean([r.accuracy for r in rs]) for rs in by_episode.values()], seed=seed)
        f1 = mean_ci([_mean([macro_f1(r) for r in rs]) for rs in by_episode.values()], seed=seed)[0]
        row: dict[str, Any] = {
            "task": task, "method": method, "shots": shots, "n_episodes": len(by_episode),
            "n_queries": sum(len(rs[0].predictions) for rs in by_episode.values()),
            "accuracy": _clean(acc), "ci_low": _clean(lo), "ci_high": _clean(hi), "macro_f1": _clean(f1),
            "ece": _clean(ece(group)),
        }
        row.update(prompt_spread(group))
        for name in (query_fields or {}).get(method, ()):
            values = [p.extra[name] for r in group for p in r.predictions if name in p.extra]
            if values:
                row[name] = _clean(sum(values) / len(values))
        budget = (budgets or {}).get((task, method))
        if budget is not None:
            row.update({k: budget.get(k) for k in BUDGET_FIELDS})
        rows.append(row)
    return rows


def _split(group: Sequence[EpisodeResult], key: Any) -> dict[Any, list[EpisodeResult]]:
    out: dict[Any, list[EpisodeResult]] = defaultdict(list)
    for r in group:
        out[key(r)].append(r)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _prompt_of(r: EpisodeResult) -> str | None:
    return r.info.get("prompt")


def prompt_spread(group: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Spread across prompts of one (task, method, shots) cell: each prompt's mean accuracy over the episodes,
    summarised as ``n_prompts``, ``prompt_min``, ``prompt_max`` and ``prompt_std`` (sample SD across prompts);
    empty for a cell run under fewer than two prompts."""
    by_prompt = _split(group, _prompt_of)
    if len(by_prompt) < 2:
        return {}
    accs = [_mean([r.accuracy for r in rs]) for rs in by_prompt.values()]
    return {"n_prompts": len(accs), "prompt_min": _clean(min(accs)), "prompt_max": _clean(max(accs)),
            "prompt_std": _clean(statistics.stdev(accs))}


def prompt_rows(results: Sequence[EpisodeResult], seed: int = 0) -> list[dict[str, Any]]:
    """The per-prompt breakdown of every cell run under two or more prompts: one row per (task, method, shots,
    prompt) with accuracy and its 95% bootstrap CI over the same episodes, and macro-F1."""
    cells = _split(results, lambda r: (r.task, r.method, r.shots))
    rows = []
    for (task, method, shots), group in sorted(cells.items()):
        by_prompt = _split(group, _prompt_of)
        if len(by_prompt) < 2:
            continue
        for prompt, rs in by_prompt.items():
            acc, lo, hi = mean_ci([r.accuracy for r in rs], seed=seed)
            rows.append({"task": task, "method": method, "shots": shots, "prompt": prompt,
                         "prompt_hash": rs[0].info.get("prompt_hash"), "n_episodes": len(rs),
                         "accuracy": _clean(acc), "ci_low": _clean(lo), "ci_high": _clean(hi),
                         "macro_f1": _clean(mean_ci([macro_f1(r) for r in rs], seed=seed)[0])})
    return rows


def spread_text(row: Mapping[str, Any]) -> str:
    """A cell's spread across prompts for tables: ``0.61–0.74 (sd 0.065, 3 prompts)``; ``–`` for one prompt."""
    if not row.get("n_prompts"):
        return "–"
    return f"{row['prompt_min']:.3f}–{row['prompt_max']:.3f} (sd {row['prompt_std']:.3f}, {row['n_prompts']} prompts)"


def budget_text(row: Mapping[str, Any]) -> str:
    """A method's meta-training data in words, for tables: ``none``, ``in-task (this task's classes): 2,048 texts``,
    ``cross-task: 4,321 texts, 5 tasks``, ``class-split: 700 texts, 7 classes``, ``self-supervised: 935 unlabelled
    texts, 96 tasks built (masked words), from lee-news``; ``–`` for rows without one."""
    protocol = row.get("meta_train")
    if protocol is None:
        return "–"
    n = row.get("n_meta_texts") or 0
    if not n:
        return str(protocol)
    if protocol == "in-task":
        return f"in-task (this task's classes): {n:,} texts"
    classes, tasks = row.get("meta_classes"), row.get("meta_tasks")
    if protocol == "self-supervised":  # its classes are masked words, its tasks the sources of unlabelled text
        return SmlmtBudget(n, len(classes or ()), tuple(tasks or ())).text()
    if protocol == "class-split" and classes:
        return f"class-split: {n:,} texts, {len(classes)} other classes"
    if tasks:
        return f"{protocol}: {n:,} texts, {len(tasks)} task{'s' if len(tasks) != 1 else ''}"
    return f"{protocol}: {n:,} texts"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Summary rows as a Markdown table (with a column for the spread across prompts when a row has one)."""
    def fmt(x: Any) -> str:
        return "–" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    spread = any(r.get("n_prompts") for r in rows)
    head, align = ("across prompts: min–max (sd) | ", "---|") if spread else ("", "")
    lines = [f"| task | method | shots | episodes | queries | accuracy | 95% CI | {head}macro-F1 | ECE | "
             "meta-training data |",
             f"|---|---|---:|---:|---:|---:|---|{align}---:|---:|---|"]
    for r in rows:
        ci = f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        cell = f"{spread_text(r)} | " if spread else ""
        lines.append(f"| {r['task']} | {r['method']} | {r['shots']} | {r['n_episodes']} | {r['n_queries']} | "
                     f"{fmt(r['accuracy'])} | {ci} | {cell}{fmt(r['macro_f1'])} | {fmt(r.get('ece'))} | "
                     f"{budget_text(r)} |")
    return "\n".join(lines)
