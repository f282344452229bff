"""Turning episode results into per-query records, summary rows, a Markdown table, and run files."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .stats import ece, macro_f1, mean_ci
from .types import EpisodeResult

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


def summarize(results: Sequence[EpisodeResult], seed: int = 0) -> list[dict[str, Any]]:
    """Summary rows per (task, method, shots): accuracy with a 95% bootstrap CI over episodes, macro-F1, ECE."""
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
        masses = [p.extra["label_mass"] for r in group for p in r.predictions if "label_mass" in p.extra]
        if masses:
            row["label_mass"] = _clean(sum(masses) / len(masses))
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


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("iclkit", "torch", "transformers", "accelerate", "datasets", "evaluate", "numpy", "scipy",
                 "scikit-learn", "bitsandbytes"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Build a run folder beside ``out`` and move it into place only when everything succeeded."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
