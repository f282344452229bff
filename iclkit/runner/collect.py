"""Stage 3 of a run: ``collect(plan, executed) → RunResult``, the manifest, summary and comparisons, and ``save``.

Nothing here runs a learner or the model: every number comes from the plan and the results.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from iclkit.analysis.paired import COMPARISON_VERSION, compare, comparison_table
from iclkit.analysis.summary import SUMMARY_VERSION, budget_text, markdown_table, prompt_rows, records, summarize
from iclkit.analysis.uses import uses_summary, uses_tables
from iclkit.episodes import write_episodes
from iclkit.files import staged_dir, write_json, write_jsonl
from iclkit.probes import probe_lines
from iclkit.protocols import NO_META_TRAINING
from iclkit.runner.config import RunConfig
from iclkit.runner.execute import Executed, usage_bucket
from iclkit.runner.plan import RunPlan
from iclkit.runner.usage import Usage, total
from iclkit.shots import shots_line
from iclkit.types import Episode, EpisodeResult, episodes_hash


@dataclass
class RunResult:
    """Results of a run: every episode result, the summary rows, and the manifest."""

    config: RunConfig
    episodes: dict[str, list[Episode]]
    results: list[EpisodeResult]
    manifest: dict[str, Any]
    summary: list[dict[str, Any]] = field(default_factory=list)
    comparison: list[dict[str, Any]] = field(default_factory=list)  # paired differences vs the reference method
    budgets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (task, method) → data budget
    prompts: list[dict[str, Any]] = field(default_factory=list)  # per-prompt rows of cells run under several prompts
    probes: list[dict[str, Any]] = field(default_factory=list)  # probes.jsonl: each perturbed episode / permutation
    uses: dict[str, Any] = field(default_factory=dict)  # label probes, orders, variance (iclkit.analysis.uses)

    def table(self) -> str:
        text = markdown_table(self.summary)
        if self.comparison:
            text += (f"\n\nPaired difference vs {self.config.reference} (same episodes):\n\n"
                     + comparison_table(self.comparison))
        used = sorted({(task, b["meta_train"], tuple(b["meta_tasks"]),
                        budget_text(b) if b["meta_train"] == "self-supervised" else "")  # its counts: per method
                       for (task, _), b in self.budgets.items() if b["meta_train"] != NO_META_TRAINING})
        if used:
            plans = self.manifest.get("meta_training", {})
            lines = []
            for task, protocol, sources, counted in used:
                plan = plans.get(task) or {}
                left_out = ", ".join(f"{k} ({v})" for k, v in plan.get("excluded", {}).items()
                                     if protocol in ("cross-task", "self-supervised"))
                left_out = f"; left out: {left_out}" if left_out else ""
                if protocol == "self-supervised":
                    lines.append(f"- {task}: {counted}{left_out}")
                elif protocol == "class-split":
                    lines.append(f"- {task}: class-split: meta-trained on {', '.join(plan.get('train_classes', []))}; "
                                 f"every method evaluated on {', '.join(plan.get('eval_classes') or [])}")
                else:
                    lines.append(f"- {task}: {protocol} on {', '.join(sources)}{left_out}")
            text += ("\n\nMeta-training data (texts outside the episodes, labelled unless self-supervised; "
                     "manifest.json has it all):\n")
            text += "\n".join(lines)
        if self.manifest.get("shots_auto"):
            text += f"\n\nShots sized to the model's context window (--shots {self.config.auto_shots}):\n"
            text += "\n".join(shots_line(task, plan) for task, plan in self.manifest["shots_auto"].items())
        if self.uses:
            text += "\n\n" + uses_tables(self.uses)
        return text

    def records(self) -> list[dict[str, Any]]:
        return [rec for r in self.results for rec in records(r, self.budgets.get((r.task, r.method)))]


def collect(plan: RunPlan, executed: Executed) -> RunResult:
    """The run's manifest, summary rows, paired comparison, per-prompt rows and probe analyses."""
    config, seed = plan.config, plan.config.episodes.seed
    results = list(executed.results)
    budgets = dict(executed.budgets)
    episodes = {name: list(eps) for name, eps in plan.episodes.items()}
    # The main rows and the paired comparison stay those of the episodes as drawn: gold labels, drawn order.
    main = [r for r in results if r.info.get("labels", "gold") == "gold" and r.info.get("permutation", 0) == 0]
    usage = usage_rows(plan, executed.usage)
    manifest = {
        "iclkit_summary_version": SUMMARY_VERSION,
        "config": config.to_dict(),
        "versions": versions(),
        "model": dict(executed.model) if executed.model is not None else None,
        "tasks": {t.name: {"source": t.source, "file": t.spec.file, "n_train": len(t.train), "n_test": len(t.test),
                           "labels": list(t.labels)} for t in plan.tasks},
        "prompts": {name: [{"name": p.name, "hash": p.hash, "file": p.file} for p in ps]
                    for name, ps in plan.prompts.items()},
        "episodes_hash": {name: episodes_hash(eps) for name, eps in episodes.items()},
        **({"shots_auto": {name: {"request": str(config.auto_shots), **sp.to_dict(),
                                  "shots_run": sorted({e.shots for e in episodes[name]})}
                           for name, sp in plan.shot_plans.items()}} if plan.shot_plans else {}),
        "methods": dict(executed.described),
        "meta_train_episodes_hash": dict(executed.meta_hashes),
        "meta_training": {name: p.to_dict() if p else None for name, p in plan.protocols.items()},
        "budgets": {f"{task}/{method}": b for (task, method), b in budgets.items()},
        "seed": seed,
        "processes": executed.processes,
        # what the run asked of the model (iclkit.runner.usage); absent when it asked nothing
        **({"lm_usage": {"jobs": usage, "total": total([Usage.from_dict(u) for u in usage]).to_dict()}}
           if usage else {}),
    }
    summary = summarize(main, seed=seed, query_fields=dict(plan.query_fields), budgets=budgets)
    comparison = (compare(main, reference=config.reference, seed=seed, budgets=budgets)
                  if config.reference in config.methods else [])
    invariant = {key: bool(d.get("order_invariant")) for key, d in executed.described.items()}
    return RunResult(config, episodes, results, manifest, summary, comparison, budgets,
                     prompt_rows(main, seed=seed),
                     probe_lines(plan.probed, config.orders, seed) if config.probing else [],
                     uses_summary(results, seed=seed, invariant=invariant, n_orders=config.orders)
                     if config.probing else {})


def usage_rows(plan: RunPlan, usage: Mapping[str, Usage]) -> list[dict[str, Any]]:
    """One row per task × method × prompt that called the model, in plan order: its LM usage."""
    rows, seen = [], set()
    for job in plan.jobs:
        bucket = usage_bucket(job.task, job.method, job.prompt)
        used = usage.get(bucket)
        if bucket in seen or used is None or used == Usage():
            continue
        seen.add(bucket)
        rows.append({"task": job.task, "method": job.method, **({"prompt": job.prompt} if job.prompt else {}),
                     **used.to_dict()})
    return rows


def versions() -> dict[str, str]:
    """Python, platform and the versions of every package that can move a score."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("iclkit", "torch", "transformers", "accelerate", "datasets", "evaluate", "numpy", "scipy",
                 "scikit-learn", "bitsandbytes"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def save(result: RunResult, out: Path) -> None:
    """Write records.jsonl, episodes.jsonl, manifest.json, summary.json/.md, plots/; all or nothing."""
    # matplotlib loads only when a run folder is written
    from iclkit.export.plots import write_plots
    from iclkit.export.uses_plot import write_uses_plots

    with staged_dir(out) as tmp:
        write_jsonl(tmp / "records.jsonl", result.records())
        write_episodes([e for eps in result.episodes.values() for e in eps], tmp / "episodes.jsonl")
        if result.probes:
            write_jsonl(tmp / "probes.jsonl", result.probes)
        write_json(tmp / "manifest.json", result.manifest)
        write_json(tmp / "summary.json", {"version": SUMMARY_VERSION, "results": result.summary,
                                          **({"prompts": result.prompts} if result.prompts else {}),
                                          **result.uses})
        (tmp / "summary.md").write_text(result.table() + "\n", encoding="utf-8")
        if result.comparison:
            write_json(tmp / "comparison.json", {"version": COMPARISON_VERSION, "reference": result.config.reference,
                                                 "rows": result.comparison})
        write_plots(result.summary, tmp / "plots", prompt_rows=result.prompts)
        if result.uses:
            write_uses_plots(result.uses, tmp / "plots")
