"""The "what each learner uses" figure of a run with label probes or orders: one figure per task, one row per
(method, shots), three panels sharing the rows — label reliance acc(gold) − acc(random) with its 95% paired CI, the
mean within-episode range over demonstration orders, and the variance of per-query correctness split into its
components (stacked shares). PNG and SVG, drawn like every iclkit plot (``iclkit.export.plots``: no pyplot, no
timestamps, legend outside the axes).

Input: summary.json's ``labels``, ``orders`` and ``variance`` entries (``iclkit.analysis.uses``), or a
leaderboard's merged ``uses`` (rows then carry ``run``, shown when several runs are merged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from iclkit.export.plots import ImageFormat, drawn, write_images

COMPONENT_COLORS = {"demonstrations": "#4f7fd1", "template": "#e0a030", "order": "#c0504d", "query": "#8fbc8f",
                    "residual": "#c8ccd6"}  # as the HTML report's stacked bars (.c-<component>)
_ROW_HEIGHT = 0.24  # inches per (method, shots) row


def _key(r: Mapping[str, Any], several_runs: bool) -> tuple[str, ...]:
    return (*((str(r.get("run")),) if several_runs else ()), str(r["method"]), str(r["shots"]))


def uses_tasks(uses: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The tasks with probe rows, sorted."""
    return sorted({str(r["task"]) for rows in uses.values() for r in rows})


def uses_figure(uses: Mapping[str, Sequence[Mapping[str, Any]]], task: str) -> Figure:
    """Label reliance, order range and variance shares of every (method, shots) of ``task``, in three panels."""
    mine = {k: [r for r in uses.get(k, []) if r["task"] == task] for k in ("labels", "orders", "variance")}
    several = len({r.get("run") for rows in mine.values() for r in rows}) > 1
    keys = sorted({_key(r, several) for rows in mine.values() for r in rows},
                  key=lambda k: (*k[:-1], int(k[-1])))
    row = {k: i for i, k in enumerate(keys)}
    by = {name: {_key(r, several): r for r in rows} for name, rows in mine.items()}
    height = max(2.2, 1.2 + _ROW_HEIGHT * len(keys))
    fig = Figure(figsize=(10.5, height), dpi=100)
    FigureCanvasAgg(fig)
    rel_ax, ord_ax, var_ax = fig.subplots(1, 3, sharey=True, gridspec_kw={"width_ratios": [1.2, 0.8, 1.4]})
    ys = list(range(len(keys)))

    for k, r in by["labels"].items():
        rel = r.get("reliance") or {}
        if rel.get("mean") is None:
            continue
        lo, hi = rel.get("ci_low"), rel.get("ci_high")
        err = [[rel["mean"] - lo], [hi - rel["mean"]]] if lo is not None and hi is not None else None
        rel_ax.errorbar([rel["mean"]], [row[k]], xerr=err, fmt="o", color="#4c72b0", markersize=4, capsize=2,
                        linewidth=1.2)
    rel_ax.axvline(0, color="black", linewidth=0.8)
    rel_ax.set_xlim(-1, 1)
    rel_ax.set_xlabel("acc(gold) − acc(random)")
    rel_ax.set_title("label reliance, 95% paired CI", fontsize=9)

    for k, r in by["orders"].items():
        if r.get("order_invariant"):
            ord_ax.text(0.01, row[k], "order-invariant", va="center", fontsize=7, color="#666666")
        elif r.get("mean_range") is not None:  # a tick at the value, so a range of 0 still shows
            ord_ax.barh([row[k]], [r["mean_range"]], color=COMPONENT_COLORS["order"], height=0.6)
            ord_ax.plot([r["mean_range"]], [row[k]], marker="|", markersize=9, color=COMPONENT_COLORS["order"])
    ord_ax.set_xlim(0, 1)
    ord_ax.set_xlabel("best − worst order, mean")
    ord_ax.set_title("order range", fontsize=9)

    names = list(COMPONENT_COLORS)
    for k, r in by["variance"].items():
        comps = r.get("components")
        if not comps:
            var_ax.text(0.01, row[k], "–", va="center", fontsize=7, color="#666666")
            continue
        left = 0.0
        for name in names:
            share = (comps.get(name) or {}).get("share") or 0.0
            var_ax.barh([row[k]], [share], left=left, color=COMPONENT_COLORS[name], height=0.6)
            left += share
    var_ax.set_xlim(0, 1)
    var_ax.set_xlabel("share of variance")
    var_ax.set_title("variance of per-query correctness", fontsize=9)
    if any(r.get("components") for r in by["variance"].values()):
        var_ax.legend(handles=[Patch(color=COMPONENT_COLORS[n], label=n) for n in names], fontsize=7, frameon=False,
                      loc="upper left", bbox_to_anchor=(1.02, 1.0))

    rel_ax.set_yticks(ys, [" · ".join([*k[:-1], f"k={k[-1]}"]) for k in keys])
    rel_ax.set_ylim(len(keys) - 0.5, -0.5)  # first row on top
    for ax in (rel_ax, ord_ax, var_ax):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{task}: what each learner uses")
    fig.tight_layout()
    return fig


def render_uses_plots(uses: Mapping[str, Sequence[Mapping[str, Any]]],
                      formats: Sequence[ImageFormat] = ("png", "svg")) -> dict[str, dict[str, bytes]]:
    """task → format → image bytes of ``uses_figure``, for every task with probe rows."""
    return {task: drawn(lambda: uses_figure(uses, task), formats) for task in uses_tasks(uses)}


def write_uses_plots(uses: Mapping[str, Sequence[Mapping[str, Any]]], folder: str | Path,
                     formats: Sequence[ImageFormat] = ("png", "svg")) -> list[Path]:
    """Write ``uses_<task>.<fmt>`` into ``folder`` for every task with probe rows; returns the paths."""
    return write_images(render_uses_plots(uses, formats), folder, "uses")
