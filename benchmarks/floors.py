"""Each meta-learner against its floor on the same episodes: MAML, FOMAML and protonet-proj vs ProtoNet; MANN and the
in-context transformer vs kNN (their memory floor) and vs kNN on the same bottlenecked inputs (knn-bottleneck).

    python benchmarks/floors.py RUN [RUN ...] [--markdown]

Reads run folders (``iclkit run --out``), pairs episodes by hash (``iclkit.analysis.paired.paired_comparison``: mean
difference, 95% bootstrap CI, two-sided paired permutation p) and prints one row per task × shots × (learner, floor)
with a verdict: ``below`` when the learner is significantly below its floor (p < 0.05, negative difference). Also
prints each meta-learner's meta-training time from the manifest (search + training, when the run recorded it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from iclkit.analysis.paired import format_p, paired_comparison

FLOORS = {"protonet-proj": ("protonet",), "maml": ("protonet",), "fomaml": ("protonet",),
          "mann": ("knn", "knn-bottleneck"), "transformer": ("knn", "knn-bottleneck"),
          "knn-bottleneck": ("knn",), "protonet-bottleneck": ("protonet",)}


def episode_accuracies(run: Path) -> dict[tuple[str, int, str], dict[str, float]]:
    """(task, shots, method) → episode hash → accuracy, gold labels and drawn order only."""
    hits: dict[tuple[str, int, str], dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    with open(run / "records.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("labels", "gold") != "gold" or r.get("permutation", 0):
                continue
            hits[(r["task"], int(r["shots"]), r["method"])][r["episode_hash"]].append(bool(r["correct"]))
    return {k: {h: sum(v) / len(v) for h, v in eps.items()} for k, eps in hits.items()}


def rows(runs: list[Path]) -> list[dict]:
    out = []
    for run in runs:
        acc = episode_accuracies(run)
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        for (task, shots, method), mine in sorted(acc.items()):
            for floor in FLOORS.get(method, ()):
                ref = acc.get((task, shots, floor))
                c = paired_comparison(mine, ref, seed=0) if ref else None
                if c is None:
                    continue
                described = manifest.get("methods", {}).get(f"{task}/{method}", {})
                budget = manifest.get("budgets", {}).get(f"{task}/{method}", {})
                out.append({"run": run.name, "task": task, "shots": shots, "method": method, "floor": floor,
                            "protocol": budget.get("meta_train"), "accuracy": c.accuracy,
                            "floor_accuracy": c.reference_accuracy, "diff": c.difference, "ci": (c.ci_low, c.ci_high),
                            "p": c.p_value, "n": c.n_episodes,
                            "below": c.p_value < 0.05 and c.difference < 0,
                            "above": c.p_value < 0.05 and c.difference > 0,
                            "best_step": (described.get("meta_val") or {}).get("best_step")})
    return out


PROTO_COLUMNS = ("protonet", "protonet-proj", "maml", "fomaml")
MEMORY_COLUMNS = ("knn", "knn-bottleneck", "mann", "transformer")


def compact(runs: list[Path], table: list[dict], columns: tuple[str, ...]) -> list[str]:
    """One line per run × shots: each method's accuracy, and for a meta-learner or control its difference from its
    first floor (ProtoNet or kNN) with ``*`` where p < 0.05; runs without any of ``columns`` are left out."""
    diff = {(r["run"], r["shots"], r["method"]): r for r in table if r["floor"] == FLOORS[r["method"]][0]}
    lines = ["| run | k | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for run in runs:
        acc = episode_accuracies(run)
        for task, shots in sorted({(t, k) for t, k, m in acc if m in columns[1:]}):
            cells = []
            for m in columns:
                eps = acc.get((task, shots, m))
                if not eps:
                    cells.append("–")
                    continue
                cell = f"{sum(eps.values()) / len(eps):.3f}"
                if (r := diff.get((run.name, shots, m))) is not None:
                    cell += f" ({r['diff']:+.3f}{'*' if r['p'] < 0.05 else ''})"
                cells.append(cell)
            lines.append(f"| {run.name} | {shots} | " + " | ".join(cells) + " |")
    return lines


def timings(runs: list[Path]) -> list[dict]:
    """Per run × meta-learner: the search's and the training's wall seconds and outer steps, from the manifest
    (None where the run loaded cached weights trained before the time was recorded)."""
    out = []
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        for key, described in sorted(manifest.get("methods", {}).items()):
            val = described.get("meta_val") if isinstance(described, dict) else None
            if not val:
                continue
            out.append({"run": run.name, "method": key.split("/", 1)[1], "train_s": val.get("seconds"),
                        "steps": val.get("steps_run"), "best_step": val.get("best_step"),
                        "search_s": (described.get("search") or {}).get("seconds")})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    table = rows(args.runs)
    print("| run | task | k | method | protocol | floor | acc | floor acc | diff [95% CI] | p | episodes | kept step "
          "| verdict |")
    print("|---|---|---:|---|---|---|---:|---:|---|---:|---:|---:|---|")
    for r in table:
        verdict = "**below**" if r["below"] else "above" if r["above"] else "n.s."
        print(f"| {r['run']} | {r['task']} | {r['shots']} | {r['method']} | {r['protocol']} | {r['floor']} | "
              f"{r['accuracy']:.3f} | {r['floor_accuracy']:.3f} | {r['diff']:+.3f} [{r['ci'][0]:+.3f}, "
              f"{r['ci'][1]:+.3f}] | {format_p(r['p'])} | {r['n']} | {r['best_step']} | {verdict} |")
    meta = [r for r in table if r["floor"] in ("protonet", "knn") and r["method"] in
            ("protonet-proj", "maml", "fomaml", "mann", "transformer")]
    below = [r for r in meta if r["below"]]
    print(f"\nfloors_checked={len(meta)} significantly_below={len(below)} "
          f"significantly_above={sum(r['above'] for r in meta)}")
    for columns in (PROTO_COLUMNS, MEMORY_COLUMNS):
        print("\n" + "\n".join(compact(args.runs, table, columns)))
    print("\n| run | meta-learner | search s | training s | outer steps run | step kept |")
    print("|---|---|---:|---:|---:|---:|")
    for t in timings(args.runs):
        fmt = lambda v: "–" if v is None else f"{v:g}"  # noqa: E731
        print(f"| {t['run']} | {t['method']} | {fmt(t['search_s'])} | {fmt(t['train_s'])} | {fmt(t['steps'])} | "
              f"{fmt(t['best_step'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
