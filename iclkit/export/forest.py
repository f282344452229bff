"""Forest plot of paired differences: every method minus the reference method on the same episodes, for one task.

One row per comparison, grouped by shots (a bold header row per shot count): the mean difference in episode
accuracy as a point, its 95% CI as a bar, a dashed line at zero. A filled point has p < 0.05 (two-sided paired
permutation test), an open one does not. At double-column width the numbers stand beside each row, in a monospaced
column on the right: difference [95% CI], p and the paired episodes. The numbers are the leaderboard's comparisons
(iclkit.analysis.paired); this module only chooses and draws them.

Which comparisons: a method is compared with the reference of its own run. The leaderboard also pairs entries
across runs that share episodes (another backbone's reference, another normalisation's ICL); such a cross-run
comparison is drawn only for an entry that has none within its run, so each entry appears once per shot count.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from iclkit.analysis.paired import DEFAULT_REFERENCE, format_p
from iclkit.export.paper_style import WIDTHS, Width, method_order

ALPHA = 0.05
_LINE_IN = 0.145  # inches per text line at 7 pt
_WRAP = {"single": 24, "double": 38}  # characters per line of a row label
NUMBERS_HEAD = f"{'difference [95% CI]':<23} {'p':>8} {'episodes':>8}"


@dataclass(frozen=True)
class Row:
    """One row of the plot: a shots header (``comparison`` None) or one comparison under it."""

    label: str
    comparison: Mapping[str, Any] | None = None


def _key(side: Mapping[str, Any]) -> tuple[str, str, str]:
    return str(side.get("model")), str(side["method"]), str(side.get("run"))


def chosen(comparisons: Sequence[Mapping[str, Any]], task: str, shots: Sequence[int] | None = None
           ) -> list[Mapping[str, Any]]:
    """The task's comparisons the plot draws: within-run ones, and cross-run ones for entries without any."""
    mine = [c for c in comparisons if c["task"] == task and (shots is None or c["shots"] in shots)
            and None not in (c["mean_diff"], c["ci_low"], c["ci_high"])]  # None: a NaN in the leaderboard
    within = {(c["shots"], _key(c["a"])) for c in mine if c["a"].get("run") == c["b"].get("run")}
    return [c for c in mine if c["a"].get("run") == c["b"].get("run") or (c["shots"], _key(c["a"])) not in within]


def number_text(c: Mapping[str, Any]) -> str:
    """A row's numbers in the right-hand column, aligned under ``NUMBERS_HEAD``:
    ``+0.052 [-0.012, +0.113]    0.031       40``."""
    return f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] {format_p(c['p_value']):>8} " \
           f"{c['n_episodes']:>8}"


def rows_of(comparisons: Sequence[Mapping[str, Any]], width: Width = "double") -> list[Row]:
    """The plot's rows top to bottom: per shot count (and reference entry, when there are several), a header,
    then its comparisons in family order. Labels name what tells the rows apart: the method, and the backbone or
    run only when they differ."""
    refs = sorted({_key(c["b"]) for c in comparisons})
    ref_parts = [len({r[i] for r in refs}) > 1 for i in (0, 2)]  # do reference entries differ by model / run?
    groups: dict[tuple[int, tuple[str, str, str]], list[Mapping[str, Any]]] = {}
    for c in sorted(comparisons, key=lambda c: (c["shots"], _key(c["b"]), method_order(c["a"]["method"]),
                                                _key(c["a"]))):
        groups.setdefault((c["shots"], _key(c["b"])), []).append(c)
    out = []
    for (shots, (model, method, run)), cs in groups.items():
        vs = [*([model] if ref_parts[0] else []), *([f"[{run}]"] if ref_parts[1] else [])]
        out.append(Row(f"{shots} shot{'' if shots == 1 else 's'}" + (f" · vs {method} {' '.join(vs)}" if vs else "")))
        within = [c for c in cs if c["a"].get("run") == c["b"].get("run")]
        several_models = len({c["a"].get("model") for c in within}) > 1
        for c in cs:
            cross = c["a"].get("run") != c["b"].get("run")  # named in full: backbone and run
            label = str(c["a"]["method"]) + (f" · {c['a'].get('model') or 'no LM'}" if several_models or cross else "")
            out.append(Row(label + (f" [{c['a']['run']}]" if cross else ""), c))
    return [Row(textwrap.fill(r.label, _WRAP[width], break_on_hyphens=False), r.comparison) for r in out]


def forest_plot(comparisons: Sequence[Mapping[str, Any]], task: str, *, reference: str = DEFAULT_REFERENCE,
                width: Width = "double", shots: Sequence[int] | None = None) -> Figure:
    """The paired differences vs ``reference`` on ``task`` (leaderboard comparison rows: ``mean_diff``,
    ``ci_low``, ``ci_high``, ``p_value``, ``n_episodes``) at a paper's single- or double-column width; ``shots``:
    only these shot counts."""
    rows = rows_of(chosen(comparisons, task, shots), width)
    heights = [r.label.count("\n") + 1 for r in rows]
    ys = [sum(heights[:i]) + (h - 1) / 2 for i, h in enumerate(heights)]  # row centres, in lines from the top
    fig = Figure(figsize=(WIDTHS[width], 1.0 + _LINE_IN * sum(heights)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = [(y, r.comparison) for y, r in zip(ys, rows) if r.comparison is not None]
    ax.hlines([y for y, _ in drawn], [c["ci_low"] for _, c in drawn], [c["ci_high"] for _, c in drawn],
              color="0.15", linewidth=1.1, gid="ci")
    significant = [c["p_value"] is not None and c["p_value"] < ALPHA for _, c in drawn]
    ax.scatter([c["mean_diff"] for _, c in drawn], [y for y, _ in drawn], s=16, zorder=3, linewidths=0.8,
               edgecolors="0.15", facecolors=["0.15" if s else "white" for s in significant], gid="difference")
    ax.axvline(0, color="0.45", linestyle="--", linewidth=0.7, zorder=0)
    ax.set_yticks(ys, [r.label for r in rows])
    for tick, r in zip(ax.get_yticklabels(), rows):
        tick.set_fontweight("normal" if r.comparison is not None else "bold")
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(sum(heights) - 0.4, -0.6)
    ax.grid(axis="x", alpha=0.3, linewidth=0.4)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel(f"accuracy difference, method − {reference}\n(same episodes; bars: 95% CI)" if width == "double"
                  else f"accuracy − {reference}\n(same episodes, 95% CI)")
    if width == "double":
        numbers = ax.twinx()  # the numbers as the right-hand tick labels: the layout makes room for them
        numbers.set_ylim(ax.get_ylim())
        numbers.set_yticks(ys, [NUMBERS_HEAD if r.comparison is None and i == 0 else
                                "" if r.comparison is None else number_text(r.comparison)
                                for i, r in enumerate(rows)], fontfamily="monospace", fontsize=7)
        numbers.tick_params(axis="y", length=0)
        for side in ("top", "right"):
            numbers.spines[side].set_visible(False)
        if rows:
            numbers.get_yticklabels()[0].set_fontweight("bold")
    fig.suptitle(f"{task}: each method vs {reference}")
    fig.legend(handles=[Line2D([], [], marker="o", linestyle="", color="0.15", markersize=4, label=f"p < {ALPHA}"),
                        Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="0.15",
                               markersize=4, label=f"p ≥ {ALPHA} (paired permutation test)")],
               loc="outside lower center", ncols=2, frameon=False)
    return fig
