"""Merging run folders into one leaderboard: rows by model × task × method × shots, and paired comparisons.

Rows come from each run's summary.json; the paired comparisons (and users' own metrics) are recomputed from
records.jsonl, pairing methods and models on identical episodes (same episode hash). This module only reads runs
and builds the ``Leaderboard``; writing it in a format is iclkit.export.formats.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from iclkit.analysis.paired import DEFAULT_REFERENCE, paired_comparison
from iclkit.analysis.stats import macro_f1_of, mean_ci
from iclkit.analysis.summary import SUMMARY_VERSION
from iclkit.errors import IclkitError
from iclkit.files import read_json_lines
from iclkit.results import read_run_json
from iclkit.verify.certificate import run_verification

SCHEMA_VERSION = 1
ROW_FIELDS = ("model", "task", "method", "shots", "n_episodes", "n_queries", "accuracy", "ci_low", "ci_high",
              "macro_f1", "ece", "meta_train", "n_meta_texts", "meta_tasks", "meta_classes", "run")
# A method's data budget (iclkit.protocols.budget_fields) as rows and comparison entries carry it; None for runs
# written before budgets were recorded. ``model`` already names the pretrained backbone.
BUDGET_FIELDS = ("meta_train", "n_meta_texts", "meta_tasks", "meta_classes")
# A cell run under several prompts: how far the prompts' mean accuracies spread (iclkit.analysis.summary).
SPREAD_FIELDS = ("n_prompts", "prompt_min", "prompt_max", "prompt_std")
USES_KEYS = ("labels", "orders", "variance")  # summary.json entries of a run with --labels/--orders (analysis.uses)


@dataclass(frozen=True)
class Run:
    """One run folder as read back: its summary rows, manifest and per-query records."""

    name: str
    path: Path
    manifest: Mapping[str, Any]
    summary: tuple[Mapping[str, Any], ...]
    records: tuple[Mapping[str, Any], ...]
    prompt_rows: tuple[Mapping[str, Any], ...] = ()  # summary.json "prompts": per-prompt rows (template spread)
    uses: Mapping[str, Any] = field(default_factory=dict)  # summary.json "labels", "orders", "variance" (probes)

    def budget_of(self, task: str, method: str) -> dict[str, Any]:
        """The method's data budget on ``task`` from the run's summary rows (None values for older runs)."""
        row = next((s for s in self.summary if s["task"] == task and s["method"] == method), {})
        return {k: row.get(k) for k in BUDGET_FIELDS}

    def model_of(self, task: str, method: str) -> str | None:
        """The backbone a method ran on, in words (its described ``backbone``); for run folders written before
        learners described one: the LM's name, or None for methods that used no LM."""
        described = self.manifest.get("methods", {}).get(f"{task}/{method}", {})
        if not isinstance(described, Mapping):
            return None
        if described.get("backbone"):
            return str(described["backbone"])
        model = described.get("model")
        if isinstance(model, Mapping):
            return str(model.get("model") or model.get("name") or "") or None
        return str(model) if model else None


@dataclass(frozen=True)
class Leaderboard:
    """Rows, paired comparisons and the runs they came from; ``to_dict`` follows leaderboard.schema.json."""

    runs: tuple[Mapping[str, Any], ...]
    rows: tuple[Mapping[str, Any], ...]
    comparisons: tuple[Mapping[str, Any], ...]
    prompts: tuple[Mapping[str, Any], ...] = ()  # per-prompt rows of cells run under several prompts
    calibration: tuple[Mapping[str, Any], ...] = ()  # calibrated outputs vs their raw output, same run
    uses: Mapping[str, Any] = field(default_factory=dict)  # label probes, orders, variance rows of every run
    meta_training: tuple[Mapping[str, Any], ...] = ()  # each meta-learner's meta-validation curve and search
    reference: str = DEFAULT_REFERENCE  # the method the comparisons are made against

    def metric_names(self) -> list[str]:
        """Names of the users' own metrics that any row carries, sorted."""
        return sorted({name for r in self.rows for name in r.get("metrics", {})})

    def to_dict(self) -> dict[str, Any]:
        """The leaderboard as JSON-able data (leaderboard.schema.json)."""
        return {"schema": "iclkit-leaderboard", "schema_version": SCHEMA_VERSION, "runs": [dict(r) for r in self.runs],
                "rows": [dict(r) for r in self.rows], "comparisons": [dict(c) for c in self.comparisons],
                **({"prompts": [dict(r) for r in self.prompts]} if self.prompts else {}),
                **({"calibration": [dict(r) for r in self.calibration]} if self.calibration else {}),
                **({"uses": {k: [dict(r) for r in v] for k, v in self.uses.items()}} if self.uses else {}),
                **({"meta_training": [dict(r) for r in self.meta_training]} if self.meta_training else {})}


_HINT = "pass folders written by `iclkit run --out DIR`"


def _read_records(path: Path) -> list[dict[str, Any]]:
    return [d for _, d in read_json_lines(path, missing="missing file: not an iclkit run folder?")]


def read_run(path: str | Path) -> Run:
    """Read a run folder written by ``iclkit run --out``."""
    folder = Path(path)
    if not folder.is_dir():
        raise IclkitError("no such run folder", file=str(folder))
    summary = read_run_json(folder / "summary.json", _HINT)
    if not isinstance(summary, dict) or summary.get("version") != SUMMARY_VERSION:
        raise IclkitError(f"unsupported summary version {summary.get('version') if isinstance(summary, dict) else None}"
                          f" (this iclkit reads version {SUMMARY_VERSION})", file=str(folder / "summary.json"))
    manifest = read_run_json(folder / "manifest.json", _HINT)
    return Run(name=folder.name, path=folder, manifest=manifest, summary=tuple(summary.get("results", [])),
               records=tuple(_read_records(folder / "records.jsonl")), prompt_rows=tuple(summary.get("prompts", [])),
               uses={k: summary[k] for k in USES_KEYS if summary.get(k)})


def _episodes(run: Run) -> dict[tuple[str, str, int], dict[str, list[Mapping[str, Any]]]]:
    """(task, method, shots) → episode hash → its query records, in file order. Only the episodes as drawn (gold
    labels, drawn order): label probes and extra orders (--labels, --orders) are summarised in the run's own
    "labels"/"orders"/"variance" entries instead."""
    out: dict[tuple[str, str, int], dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for rec in run.records:
        if rec.get("labels", "gold") != "gold" or rec.get("permutation", 0) != 0:
            continue
        out[(rec["task"], rec["method"], int(rec["shots"]))][rec["episode_hash"]].append(rec)
    return out


def _accuracy(records: Sequence[Mapping[str, Any]]) -> float:
    return sum(bool(r["correct"]) for r in records) / len(records)


def _round(x: float) -> float | None:
    return None if x != x else round(float(x), 4)  # nan → None


def _comparisons(runs: Sequence[Run], reference: str, seed: int) -> list[dict[str, Any]]:
    """Every (model, method) against each reference-method entry, paired on shared episodes."""
    entries: dict[tuple[str, int], dict[tuple[str | None, str, str], dict[str, float]]] = defaultdict(dict)
    for run in runs:
        for (task, method, shots), eps in _episodes(run).items():
            key = (run.model_of(task, method), method, run.name)
            entries[(task, shots)][key] = {h: _accuracy(recs) for h, recs in eps.items()}
    out = []
    for (task, shots), by_entry in sorted(entries.items()):
        seen: set[frozenset[tuple[str | None, str, str]]] = set()
        for ref, ref_acc in sorted(by_entry.items(), key=str):
            if ref[1] != reference:
                continue
            for other, acc in sorted(by_entry.items(), key=str):
                pair = frozenset((ref, other))
                if other == ref or pair in seen:
                    continue
                c = paired_comparison(acc, ref_acc, seed=seed)
                if c is None:
                    continue  # runs on different episodes (another seed or task sample): nothing to pair
                seen.add(pair)
                out.append({"task": task, "shots": shots,
                            "a": {"model": other[0], "method": other[1], "run": other[2],
                                  **_entry_budget(runs, other[2], task, other[1])},
                            "b": {"model": ref[0], "method": ref[1], "run": ref[2],
                                  **_entry_budget(runs, ref[2], task, ref[1])},
                            "n_episodes": c.n_episodes, "n_dropped": c.n_dropped, "mean_diff": _round(c.difference),
                            "ci_low": _round(c.ci_low), "ci_high": _round(c.ci_high),
                            "p_value": _round(c.p_value)})
    return out


def _entry_budget(runs: Sequence[Run], run_name: str, task: str, method: str) -> dict[str, Any]:
    """The comparison entry's budget fields; none for runs written before budgets were recorded."""
    run = next(r for r in runs if r.name == run_name)
    budget = run.budget_of(task, method)
    return {k: budget[k] for k in ("meta_train", "n_meta_texts") if budget[k] is not None}


def _episode_f1(records: Sequence[Mapping[str, Any]]) -> float:
    """An episode's macro-F1 from its records (the mean over its prompts when it ran under several); the labels
    are the keys of the records' scores."""
    by_prompt: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_prompt[r.get("prompt")].append(r)
    values = [macro_f1_of([str(r["gold"]) for r in recs], [str(r["prediction"]) for r in recs],
                          list(recs[0].get("scores") or {})) for recs in by_prompt.values()]
    return sum(values) / len(values)


def _calibration(runs: Sequence[Run], seed: int) -> list[dict[str, Any]]:
    """Every calibrated output (its manifest entry names a ``calibration`` and the ``raw_method`` it calibrates)
    against that raw output of the same run, paired on episodes: accuracy and macro-F1 differences."""
    out = []
    for run in runs:
        eps = _episodes(run)
        for (task, method, shots), mine in sorted(eps.items()):
            described = run.manifest.get("methods", {}).get(f"{task}/{method}", {})
            if not isinstance(described, Mapping) or described.get("calibration") in (None, "none"):
                continue
            raw = eps.get((task, str(described.get("raw_method")), shots))
            if raw is None or not all(r.get("scores") for recs in mine.values() for r in recs):
                continue
            acc = paired_comparison({h: _accuracy(r) for h, r in mine.items()},
                                    {h: _accuracy(r) for h, r in raw.items()}, seed=seed)
            f1 = paired_comparison({h: _episode_f1(r) for h, r in mine.items()},
                                   {h: _episode_f1(r) for h, r in raw.items()}, seed=seed)
            if acc is None or f1 is None:
                continue
            out.append({"model": run.model_of(task, method), "task": task, "shots": shots, "method": method,
                        "reference": described.get("raw_method"), "calibration": described.get("calibration"),
                        "transductive": bool(described.get("transductive")), "n_episodes": acc.n_episodes,
                        "accuracy": _round(acc.accuracy), "reference_accuracy": _round(acc.reference_accuracy),
                        "mean_diff": _round(acc.difference), "ci_low": _round(acc.ci_low),
                        "ci_high": _round(acc.ci_high), "p_value": _round(acc.p_value),
                        "f1_diff": _round(f1.difference), "f1_ci_low": _round(f1.ci_low),
                        "f1_ci_high": _round(f1.ci_high), "f1_p_value": _round(f1.p_value), "run": run.name})
    return out


def _meta_training(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Every meta-learner's meta-validation record from its run's manifest: the accuracy curve on meta-validation
    episodes (step 0 = the untrained learner, its floor), the step kept, and the hyperparameter search if one ran."""
    out = []
    for run in runs:
        for key, described in sorted(run.manifest.get("methods", {}).items()):
            if not isinstance(described, Mapping) or not (described.get("meta_val") or described.get("search")):
                continue
            task, method = key.split("/", 1)
            data = described.get("meta_train_data") or {}
            out.append({"model": run.model_of(task, method), "task": task, "method": method,
                        "curve": (described.get("meta_val") or {}).get("curve", []),
                        "best_step": (described.get("meta_val") or {}).get("best_step"),
                        "n_val_episodes": data.get("n_val_episodes", 0),
                        "val_classes": data.get("val_classes", []),
                        **({"search": described["search"]} if described.get("search") else {}), "run": run.name})
    return out


def _plugin_columns(run: Run, metrics: Sequence[Any], seed: int) -> dict[tuple[str, str, int], dict[str, Any]]:
    from iclkit.analysis.metrics_plugins import compute

    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for key, eps in _episodes(run).items():
        per_name: dict[str, list[float]] = defaultdict(list)
        for recs in eps.values():
            for metric in metrics:
                for name, value in compute(metric, [str(r["prediction"]) for r in recs],
                                           [str(r["gold"]) for r in recs]).items():
                    per_name[name].append(value)
        out[key] = {}
        for name, values in sorted(per_name.items()):
            m, lo, hi = mean_ci(values, seed=seed)
            out[key][name] = {"value": _round(m), "ci_low": _round(lo), "ci_high": _round(hi)}
    return out


def build(run_dirs: Sequence[str | Path], *, metrics: Sequence[str | Path] = (),
          reference: str = DEFAULT_REFERENCE, seed: int = 0) -> Leaderboard:
    """Merge run folders into a leaderboard; ``metrics`` are paths of local ``evaluate`` metric scripts."""
    if not run_dirs:
        raise IclkitError("give at least one run folder")
    runs = [read_run(p) for p in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        runs = [Run(str(r.path), r.path, r.manifest, r.summary, r.records, r.prompt_rows, r.uses)
                for r in runs]  # apart
    loaded = []
    if metrics:
        from iclkit.analysis.metrics_plugins import load_metric

        loaded = [load_metric(m) for m in metrics]
    rows, infos = [], []
    for run in runs:
        plugin = _plugin_columns(run, loaded, seed) if loaded else {}
        cfg = run.manifest.get("config", {})
        infos.append({"name": run.name, "model": (run.manifest.get("model") or {}).get("model"),
                      "weights_sha256": (run.manifest.get("model") or {}).get("weights_sha256"),
                      "seed": run.manifest.get("seed"), "tasks": list(run.manifest.get("tasks", {})),
                      "methods": list(cfg.get("methods", [])),
                      "iclkit": run.manifest.get("versions", {}).get("iclkit"),
                      **run_verification(run.path)})  # `iclkit verify`'s certificate, if the folder has one
        for s in run.summary:
            row = {"model": run.model_of(s["task"], s["method"]), "task": s["task"], "method": s["method"],
                   "shots": int(s["shots"]), "n_episodes": s["n_episodes"], "n_queries": s["n_queries"],
                   "accuracy": s.get("accuracy"), "ci_low": s.get("ci_low"), "ci_high": s.get("ci_high"),
                   "macro_f1": s.get("macro_f1"), "ece": s.get("ece"), **{k: s.get(k) for k in BUDGET_FIELDS},
                   "run": run.name, **{k: s[k] for k in SPREAD_FIELDS if k in s}}
            if plugin:
                row["metrics"] = plugin.get((s["task"], s["method"], int(s["shots"])), {})
            rows.append(row)
    rows.sort(key=lambda r: (r["task"], str(r["model"] or ""), r["method"], r["shots"], r["run"]))
    prompts = [{"model": run.model_of(p["task"], p["method"]), **p, "run": run.name} for run in runs
               for p in run.prompt_rows]
    uses = {k: [{"model": run.model_of(r["task"], r["method"]), **r, "run": run.name} for run in runs
                for r in run.uses.get(k, [])] for k in USES_KEYS}
    return Leaderboard(tuple(infos), tuple(rows), tuple(_comparisons(runs, reference, seed)), tuple(prompts),
                       tuple(_calibration(runs, seed)), {k: v for k, v in uses.items() if v},
                       tuple(_meta_training(runs)), reference)
