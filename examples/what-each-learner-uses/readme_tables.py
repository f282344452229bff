"""The README's "What each learner uses" tables, from a leaderboard JSON (``iclkit leaderboard ... --format json``).

    python examples/what-each-learner-uses/readme_tables.py examples/what-each-learner-uses/leaderboard.json

One table per task: per method and shots, accuracy under gold / random / flipped support labels, the label
reliance acc(gold) − acc(random) with its 95% paired bootstrap CI, the mean within-episode accuracy range over the
demonstration orders with the fraction of queries whose prediction changes, and the variance components' shares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COMPONENTS = ("demonstrations", "template", "order", "query", "residual")
ORDER = ("icl", "protonet", "knn", "linear", "protonet-proj", "maml", "fomaml", "mann", "transformer")


def _acc(row: dict[str, Any] | None, probe: str) -> str:
    p = ((row or {}).get("probes") or {}).get(probe) or {}
    return "–" if p.get("accuracy") is None else f"{p['accuracy']:.2f}"


def _reliance(row: dict[str, Any] | None) -> str:
    r = (row or {}).get("reliance") or {}
    if r.get("mean") is None:
        return "–"
    star = "***" if r["p_value"] < 0.001 else "**" if r["p_value"] < 0.01 else "*" if r["p_value"] < 0.05 else ""
    return f"{r['mean']:+.2f}{star} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"


def _orders(row: dict[str, Any] | None) -> tuple[str, str]:
    if not row:
        return "–", "–"
    if row.get("order_invariant"):
        return "invariant", "0"
    rng, changed = row.get("mean_range"), row.get("changed_fraction")
    return ("–" if rng is None else f"{rng:.2f}"), ("–" if changed is None else f"{changed:.2f}")


def _shares(row: dict[str, Any] | None, present: tuple[str, ...]) -> str:
    comps = (row or {}).get("components")
    if not comps:
        return "–"
    return " / ".join(f"{(comps[c]['share'] or 0) * 100:.0f}" for c in present)


def tables(board: dict[str, Any]) -> str:
    uses = board["uses"]
    budget = {(r["task"], r["method"]): f"{r['meta_train']}: {r['n_meta_texts']:,} texts" if r.get("n_meta_texts")
              else "none" for r in board["rows"]}
    index = {name: {(r["task"], r["method"], r["shots"]): r for r in uses.get(name, [])}
             for name in ("labels", "orders", "variance")}
    out = []
    for task in sorted({r["task"] for r in uses["labels"]}):
        cells = sorted({k for k in index["labels"] if k[0] == task},
                       key=lambda k: (ORDER.index(k[1]) if k[1] in ORDER else len(ORDER), k[1], k[2]))
        present = tuple(c for c in COMPONENTS
                        if any(((index["variance"].get(k) or {}).get("components") or {}).get(c, {}).get("variance")
                               for k in cells))
        out += [f"**{task}** (chance {index['labels'][cells[0]]['chance']:.2f}; variance shares in %: "
                f"{' / '.join(present)})", "",
                "| method | meta-training | k | gold | random | flipped | label reliance [95% CI] | order range | "
                "changed | variance shares |", "|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
        for k in cells:
            lab = index["labels"].get(k)
            rng, changed = _orders(index["orders"].get(k))
            out.append(f"| {k[1]} | {budget.get((task, k[1])) or 'none'} | {k[2]} | {_acc(lab, 'gold')} | "
                       f"{_acc(lab, 'random')} | {_acc(lab, 'flipped')} | {_reliance(lab)} | {rng} | {changed} | "
                       f"{_shares(index['variance'].get(k), present)} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(json.loads(Path(sys.argv[1]).read_text())))
