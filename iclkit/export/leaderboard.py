"""Merging run folders into one leaderboard: rows by model × task × method × shots, and paired comparisons.

Rows come from each run's summary.json; the paired comparisons (and users' own metrics) are recomputed from
records.jsonl, pairing methods and models on identical episodes (same episode hash).
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.files import atomic_write
from iclkit.analysis.summary import SUMMARY_VERSION
from iclkit.analysis.stats import mean_ci, paired_test

SCHEMA_VERSION = 1
Format = Literal["md", "csv", "json", "html"]
FORMATS: tuple[Format, ...] = ("md", "csv", "json", "html")
ROW_FIELDS = ("model", "task", "method", "shots", "n_episodes", "n_queries", "accuracy", "ci_low", "ci_high",
              "macro_f1", "ece", "run")


@dataclass(frozen=True)
class Run:
    """One run folder as read back: its summary rows, manifest and per-query records."""

    name: str
    path: Path
    manifest: Mapping[str, Any]
    summary: tuple[Mapping[str, Any], ...]
    records: tuple[Mapping[str, Any], ...]

    def model_of(self, task: str, method: str) -> str | None:
        """The model a method used (None for methods that use no LM)."""
        described = self.manifest.get("methods", {}).get(f"{task}/{method}", {})
        model = described.get("model") if isinstance(described, Mapping) else None
        if isinstance(model, Mapping):
            return str(model.get("model") or model.get("name") or "") or None
        return str(model) if model else None


@dataclass(frozen=True)
class Leaderboard:
    """Rows, paired comparisons and the runs they came from; ``to_dict`` follows leaderboard.schema.json."""

    runs: tuple[Mapping[str, Any], ...]
    rows: tuple[Mapping[str, Any], ...]
    comparisons: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "iclkit-leaderboard", "schema_version": SCHEMA_VERSION, "runs": [dict(r) for r in self.runs],
                "rows": [dict(r) for r in self.rows], "comparisons": [dict(c) for c in self.comparisons]}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IclkitError("missing file: not an iclkit run folder?", file=str(path),
                          hint="pass folders written by `iclkit run --out DIR`") from None
    except OSError as e:
        raise IclkitError(f"cannot read: {e.strerror}", file=str(path)) from None
    except json.JSONDecodeError as e:
        raise IclkitError(f"malformed JSON: {e.msg}", file=str(path), line=e.lineno) from None


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise IclkitError("missing file: not an iclkit run folder?", file=str(path))
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise IclkitError(f"malformed JSON: {e.msg}", file=str(path), line=lineno) from None
    return out


def read_run(path: str | Path) -> Run:
    """Read a run folder written by ``iclkit run --out``."""
    folder = Path(path)
    if not folder.is_dir():
        raise IclkitError("no such run folder", file=str(folder))
    summary = _read_json(folder / "summary.json")
    if not isinstance(summary, dict) or summary.get("version") != SUMMARY_VERSION:
        raise IclkitError(f"unsupported summary version {summary.get('version') if isinstance(summary, dict) else None}"
                          f" (this iclkit reads version {SUMMARY_VERSION})", file=str(folder / "summary.json"))
    manifest = _read_json(folder / "manifest.json")
    return Run(name=folder.name, path=folder, manifest=manifest, summary=tuple(summary.get("results", [])),
               records=tuple(_read_records(folder / "records.jsonl")))


def _episodes(run: Run) -> dict[tuple[str, str, int], dict[str, list[Mapping[str, Any]]]]:
    """(task, method, shots) → episode hash → its query records, in file order."""
    out: dict[tuple[str, str, int], dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for rec in run.records:
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
                shared = sorted(set(ref_acc) & set(acc))
                if len(shared) < 2:
                    continue
                seen.add(pair)
                t = paired_test([acc[h] for h in shared], [ref_acc[h] for h in shared], seed=seed)
                out.append({"task": task, "shots": shots,
                            "a": {"model": other[0], "method": other[1], "run": other[2]},
                            "b": {"model": ref[0], "method": ref[1], "run": ref[2]},
                            "n_episodes": t.n, "mean_diff": _round(t.mean_diff), "ci_low": _round(t.ci_low),
                            "ci_high": _round(t.ci_high), "p_value": _round(t.p_value)})
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


def build(run_dirs: Sequence[str | Path], *, metrics: Sequence[str | Path] = (), reference: str = "icl",
          seed: int = 0) -> Leaderboard:
    """Merge run folders into a leaderboard; ``metrics`` are paths of local ``evaluate`` metric scripts."""
    if not run_dirs:
        raise IclkitError("give at least one run folder")
    runs = [read_run(p) for p in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        runs = [Run(str(r.path), r.path, r.manifest, r.summary, r.records) for r in runs]  # keep runs apart
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
                      "iclkit": run.manifest.get("versions", {}).get("iclkit")})
        for s in run.summary:
            row = {"model": run.model_of(s["task"], s["method"]), "task": s["task"], "method": s["method"],
                   "shots": int(s["shots"]), "n_episodes": s["n_episodes"], "n_queries": s["n_queries"],
                   "accuracy": s.get("accuracy"), "ci_low": s.get("ci_low"), "ci_high": s.get("ci_high"),
                   "macro_f1": s.get("macro_f1"), "ece": s.get("ece"), "run": run.name}
            if plugin:
                row["metrics"] = plugin.get((s["task"], s["method"], int(s["shots"])), {})
            rows.append(row)
    rows.sort(key=lambda r: (r["task"], str(r["model"] or ""), r["method"], r["shots"], r["run"]))
    return Leaderboard(tuple(infos), tuple(rows), tuple(_comparisons(runs, reference, seed)))


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _metric_names(lb: Leaderboard) -> list[str]:
    return sorted({name for r in lb.rows for name in r.get("metrics", {})})


def to_markdown(lb: Leaderboard) -> str:
    """Rows (and paired comparisons) as Markdown tables."""
    extra = _metric_names(lb)
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
        lines += ["", "Paired differences in accuracy on the same episodes (A − B; 95% bootstrap CI; two-sided "
                  "paired permutation test):", "",
                  "| task | shots | A | B | episodes | A − B | 95% CI | p |", "|---|---:|---|---|---:|---:|---|---:|"]
        for c in lb.comparisons:
            a = f"{_fmt(c['a']['model'])} {c['a']['method']}"
            b = f"{_fmt(c['b']['model'])} {c['b']['method']}"
            lines.append(f"| {c['task']} | {c['shots']} | {a} | {b} | {c['n_episodes']} | {_fmt(c['mean_diff'])} | "
                         f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | {_fmt(c['p_value'])} |")
    return "\n".join(lines) + "\n"


def to_csv(lb: Leaderboard) -> str:
    """One CSV line per row; users' metrics as ``<name>``, ``<name>_ci_low``, ``<name>_ci_high`` columns."""
    extra = _metric_names(lb)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*ROW_FIELDS, *[f"{m}{s}" for m in extra for s in ("", "_ci_low", "_ci_high")]])
    for r in lb.rows:
        cells = ["" if r[f] is None else r[f] for f in ROW_FIELDS]
        for m in extra:
            v = r.get("metrics", {}).get(m, {})
            cells += ["" if v.get(k) is None else v[k] for k in ("value", "ci_low", "ci_high")]
        writer.writerow(cells)
    return buf.getvalue()


def render(lb: Leaderboard, fmt: Format) -> str:
    """The leaderboard as md, csv, json or a self-contained html report."""
    if fmt == "md":
        return to_markdown(lb)
    if fmt == "csv":
        return to_csv(lb)
    if fmt == "json":
        return json.dumps(lb.to_dict(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "html":
        from iclkit.export.html_report import html_report

        return html_report(lb)
    raise IclkitError(f"unknown format {fmt!r}", field="format", hint=f"one of {', '.join(FORMATS)}")


def write(lb: Leaderboard, fmt: Format, out: str | Path) -> Path:
    """Write the rendered leaderboard atomically."""
    return atomic_write(out, render(lb, fmt))


def schema() -> dict[str, Any]:
    """The JSON Schema that ``Leaderboard.to_dict()`` follows."""
    return json.loads((Path(__file__).parent / "schema" / "leaderboard.schema.json").read_text(encoding="utf-8"))
