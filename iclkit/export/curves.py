"""Learning curves as small multiples: accuracy against shots for one task, one panel per method family
(metric-based, gradient-based, …), the reference method (ICL by default) drawn in every panel in black.

Nine methods in one panel overlap until none can be read; a panel per family keeps a handful of lines in each, and
the reference in each gives every panel the same yardstick. Panels share both axes. Each method has one colour;
when a method ran on several backbones (or in several runs), the line style tells them apart. One legend sits
below the panels, never on a curve. Bands are each row's 95% bootstrap CI over episodes.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from iclkit.analysis.paired import DEFAULT_REFERENCE
from iclkit.export.paper_style import WIDTHS, Width, families, family, legend_columns, method_order
from iclkit.export.plots import log_shots_axis

_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D")
_PANEL_HEIGHT = {"single": 1.45, "double": 1.6}  # inches
_COLUMNS = {"single": 2, "double": 3}
_WRAP = {"single": 24, "double": 40}  # characters per line of a legend entry


@dataclass(frozen=True)
class Line:
    """One curve: a method on a backbone in a run, and its summary rows sorted by shots."""

    model: str
    method: str
    run: str
    rows: tuple[Mapping[str, Any], ...]


def lines_of(rows: Sequence[Mapping[str, Any]], task: str) -> list[Line]:
    """The task's curves, in family order."""
    grouped: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["task"] == task and r.get("accuracy") is not None:
            grouped[(str(r.get("model") or ""), str(r["method"]), str(r.get("run") or ""))].append(r)
    return [Line(model, method, run, tuple(sorted(rs, key=lambda r: r["shots"])))
            for (model, method, run), rs in sorted(grouped.items(), key=lambda kv: (method_order(kv[0][1]), kv[0]))]


def panels_of(lines: Sequence[Line], reference: str) -> dict[str, list[Line]]:
    """Panel title → the lines drawn in it besides the reference: one panel per family present; a task where only
    the reference ran gets one panel, titled by it."""
    panels: dict[str, list[Line]] = {}
    for fam in families():
        mine = [ln for ln in lines if ln.method != reference and family(ln.method) == fam]
        if mine:
            panels[fam] = mine
    return panels or {reference: []}


def _variant(line: Line, several_models: bool, several_runs: bool) -> str:
    """What tells two lines of one method apart in the legend: the backbone, and the run when runs repeat it."""
    return " · ".join([*([line.model or "no LM"] if several_models else []), *([line.run] if several_runs else [])])


def _wrapped(label: str, width: Width) -> str:
    return textwrap.fill(label, _WRAP[width], break_on_hyphens=False)


def _ylim(lines: Sequence[Line]) -> tuple[float, float]:
    values = [v for ln in lines for r in ln.rows for v in (r.get("ci_low"), r.get("ci_high"), r["accuracy"])
              if v is not None]
    return max(0.0, math.floor(min(values) * 10) / 10 - 0.02), min(1.0, math.ceil(max(values) * 10) / 10) + 0.02


def _draw(ax: Any, line: Line, color: str, style: str, marker: str, reference: bool) -> None:
    x = [r["shots"] for r in line.rows]
    y = [r["accuracy"] for r in line.rows]
    lo = [r["ci_low"] if r.get("ci_low") is not None else r["accuracy"] for r in line.rows]
    hi = [r["ci_high"] if r.get("ci_high") is not None else r["accuracy"] for r in line.rows]
    ax.fill_between(x, lo, hi, color=color, alpha=0.1, linewidth=0, zorder=1)
    ax.plot(x, y, color=color, linestyle=style, marker=marker, linewidth=1.4 if reference else 1.1,
            zorder=3 if reference else 2, markersize=3.2)


def learning_curves(rows: Sequence[Mapping[str, Any]], task: str, *, reference: str = DEFAULT_REFERENCE,
                    width: Width = "double") -> Figure:
    """Accuracy against shots for ``task`` from leaderboard (or summary) rows: one panel per method family, the
    ``reference`` method in black in each, at a paper's single- or double-column width."""
    lines = lines_of(rows, task)
    refs = [ln for ln in lines if ln.method == reference]
    panels = panels_of(lines, reference)
    # line styles only where a method has several lines (two backbones, or two runs); ICL's LM differing from the
    # baselines' embedder is not such a case
    several_models = any(len({ln.model for ln in lines if ln.method == m}) > 1 for m in {ln.method for ln in lines})
    several_runs = len({(ln.model, ln.method) for ln in lines}) < len(lines)
    variants = list(dict.fromkeys(_variant(ln, several_models, several_runs) for ln in lines))
    others = list(dict.fromkeys(ln.method for ln in lines if ln.method != reference))
    colors = {m: f"C{i % 10}" if len(others) <= 10 else _tab20(i) for i, m in enumerate(others)}

    ncols = min(len(panels), _COLUMNS[width])
    nrows = math.ceil(len(panels) / ncols)
    labels = [_wrapped(s, width) for s in [*(f"{reference} (reference)" for _ in refs[:1]), *others,
                                            *(variants if len(variants) > 1 else [])]]
    legend_lines = math.ceil(sum(s.count("\n") + 1 for s in labels) / legend_columns(labels, WIDTHS[width]))
    height = nrows * _PANEL_HEIGHT[width] + 0.55 + 0.13 * legend_lines
    fig = Figure(figsize=(WIDTHS[width], height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    shots = sorted({r["shots"] for ln in lines for r in ln.rows})
    style = {v: (_STYLES[i % len(_STYLES)], _MARKERS[i % len(_MARKERS)]) for i, v in enumerate(variants)}
    for ax, (title, mine) in zip(axes.flat, panels.items()):
        for ln in [*refs, *mine]:
            linestyle, marker = style[_variant(ln, several_models, several_runs)]
            is_ref = ln.method == reference
            _draw(ax, ln, "black" if is_ref else colors[ln.method], linestyle, marker, is_ref)
        ax.set_title(title, pad=3)
        ax.grid(alpha=0.3, linewidth=0.4)
        log_shots_axis(ax, shots)
    if lines:
        axes[0, 0].set_ylim(*_ylim(lines))
    for i, ax in enumerate(axes.flat):
        below = i + ncols
        ax.set_visible(i < len(panels))
        # x tick labels on every panel with no panel below it (sharex hides them on inner rows only)
        ax.tick_params(labelbottom=below >= len(panels), labelleft=i % ncols == 0)
        if below >= len(panels):
            ax.set_xlabel("shots per class")
    fig.supylabel("accuracy")
    fig.suptitle(task)
    handles = [*(Line2D([], [], color="black", linewidth=1.4) for _ in refs[:1]),
               *(Line2D([], [], color=colors[m]) for m in others),
               *(Line2D([], [], color="0.35", linestyle=style[v][0], marker=style[v][1])
                 for v in (variants if len(variants) > 1 else []))]
    for handle, label in zip(handles, labels):
        handle.set_label(label)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=legend_columns(labels, WIDTHS[width]),
                   frameon=False, handlelength=2.2, columnspacing=1.2)
    return fig


def _tab20(i: int) -> tuple[float, float, float, float]:
    """The i-th colour of matplotlib's tab20 palette, for a task with more than ten methods besides the reference."""
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)  # type: ignore[no-any-return]
