"""The HTML report's meta-validation section: per meta-learner, its accuracy on meta-validation episodes by outer
step (a sparkline; step 0 is the untrained learner, i.e. its floor), the step kept, and the hyperparameters a
search chose on those episodes."""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

from iclkit.export.leaderboard import Leaderboard


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def sparkline(curve: Sequence[Sequence[float]], best: int | None, width: int = 160, height: int = 36) -> str:
    """An inline SVG of accuracy by step: the line, a dot at step 0 (the floor) and a ring at the step kept."""
    if not curve:
        return ""
    steps = [float(s) for s, _ in curve]
    accs = [float(a) for _, a in curve]
    lo, hi = min(accs), max(accs)
    span_x, span_y = (max(steps) - min(steps)) or 1.0, (hi - lo) or 1.0

    def xy(s: float, a: float) -> tuple[float, float]:
        return 3 + (s - min(steps)) / span_x * (width - 6), height - 3 - (a - lo) / span_y * (height - 6)

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, a) for s, a in zip(steps, accs)))
    x0, y0 = xy(steps[0], accs[0])
    ring = ""
    if best is not None and best in steps:
        bx, by = xy(best, accs[steps.index(best)])
        ring = f'<circle cx="{bx:.1f}" cy="{by:.1f}" r="3.5" fill="none" stroke="#b42318" stroke-width="1.5"/>'
    label = f"meta-validation accuracy {accs[0]:.3f} at step 0 → {hi:.3f} best"
    return (f'<svg role="img" aria-label="{_e(label)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><polyline fill="none" stroke="#1f4fa0" stroke-width="1.5" '
            f'points="{points}"/><circle cx="{x0:.1f}" cy="{y0:.1f}" r="2.5" fill="#667"/>{ring}</svg>')


def _chosen(search: Mapping[str, Any] | None) -> str:
    if not search:
        return '<span class="muted">defaults</span>'
    values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in search["chosen"].items())
    return (f"{_e(values)} <span class=\"muted\">({search['n_trials']} TPE trials, seed {search['seed']}, "
            f"{search['seconds']:.0f} s)</span>")


def meta_validation_section(lb: Leaderboard) -> str:
    """The section, or nothing when no run meta-trained with meta-validation episodes."""
    if not lb.meta_training:
        return ""
    body = []
    for r in lb.meta_training:
        curve = r["curve"]
        floor = f"{curve[0][1]:.3f}" if curve else "–"
        best = next((a for s, a in curve if s == r["best_step"]), None)
        body.append(f"<tr><td>{_e(r['task'])}</td><td>{_e(r['method'])}</td>"
                    f'<td class="num">{r.get("n_val_episodes", 0)}</td><td class="num">{floor}</td>'
                    f'<td class="num">{"–" if best is None else f"{best:.3f}"}</td>'
                    f'<td class="num">{_e("last" if r["best_step"] is None else r["best_step"])}</td>'
                    f"<td>{sparkline(curve, r['best_step'])}</td><td>{_chosen(r.get('search'))}</td>"
                    f"<td>{_e(r['run'])}</td></tr>")
    return f"""<h2>Meta-validation</h2>
<p class="muted">Each meta-learner is early-stopped, and optionally tuned, on meta-validation episodes drawn from data
held out of its own meta-training pool (source classes, sources or texts), never from the evaluated task. Step 0 is
the learner before meta-training: its floor (MAML, FOMAML and protonet-proj are ProtoNet there). The weights kept
are those of the best step (ties go to the earlier one).</p>
<table class="sortable" id="meta-validation"><thead><tr><th>task</th><th>method</th>
<th class="num">val. episodes</th><th class="num">step 0</th><th class="num">best</th><th class="num">step kept</th>
<th>accuracy by step</th><th>hyperparameters</th><th>run</th></tr></thead>
<tbody>{"".join(body)}</tbody></table>
"""
