"""Accuracy-vs-shots plots with CI bands: one figure per task, one line per (model, method), shots on a log axis
(0 shots, when run, sits one step left of 1); PNG and SVG (PDF on request). For a task whose cells ran under
several prompts, a template-spread figure: one thin line per prompt, the mean in bold.

Figures for papers (forest plots, learning curves by method family) are iclkit.export.figures.

Figures are drawn on matplotlib's Agg canvas without pyplot: no global figure state, and importing this module
leaves the user's backend alone (a notebook keeps its own). They are saved without timestamps and with a fixed SVG
id salt, so the same rows always give byte-identical files. The legend sits beside the axes, never on the curves.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import matplotlib
import matplotlib.ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ImageFormat = Literal["png", "svg", "pdf"]
# pdf.fonttype 42: TrueType fonts embedded in PDFs (publishers often ask for no Type 3 fonts)
_RC = {"svg.hashsalt": "iclkit", "svg.fonttype": "path", "pdf.fonttype": 42, "font.size": 9}
_NO_DATE = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}, "png": {}}
_WIDTH, _HEIGHT = 4.8, 3.2  # inches, without the legend


def _series(rows: Sequence[Mapping[str, Any]], task: str) -> dict[str, list[Mapping[str, Any]]]:
    lines: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    models = {r.get("model") for r in rows if r["task"] == task}
    for r in rows:
        if r["task"] != task or r.get("accuracy") is None:
            continue
        name = f"{r['model']} · {r['method']}" if len(models) > 1 and r.get("model") else str(r["method"])
        lines[name].append(r)
    return {k: sorted(v, key=lambda r: r["shots"]) for k, v in sorted(lines.items())}


def accuracy_vs_shots(rows: Sequence[Mapping[str, Any]], task: str) -> Figure:
    """A figure of accuracy against shots for one task, with each line's 95% CI as a band."""
    fig = Figure(figsize=(_WIDTH, _HEIGHT), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lines = _series(rows, task)
    for name, line in lines.items():
        x = [r["shots"] for r in line]
        y = [r["accuracy"] for r in line]
        lo = [r["ci_low"] if r.get("ci_low") is not None else r["accuracy"] for r in line]
        hi = [r["ci_high"] if r.get("ci_high") is not None else r["accuracy"] for r in line]
        (handle,) = ax.plot(x, y, marker="o", linewidth=1.5, markersize=4, label=name)
        ax.fill_between(x, lo, hi, color=handle.get_color(), alpha=0.18, linewidth=0)
    return _finish(fig, ax, sorted({r["shots"] for line in lines.values() for r in line}), task, bool(lines))


def _finish(fig: Figure, ax: Any, shots: Sequence[int], title: str, legend: bool) -> Figure:
    """Axes of an accuracy-vs-shots figure, and its legend beside the axes, so it never hides a curve: the figure
    widens by the legend's width, so the plot keeps its size however long the names are, and tight_layout fits
    axes, labels and legend inside."""
    log_shots_axis(ax, shots)
    ax.set_xlabel("shots per class")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        box = ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.set_size_inches(_WIDTH + box.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi + 0.2, _HEIGHT)
    fig.tight_layout()
    return fig


def log_shots_axis(ax: Any, shots: Sequence[int]) -> None:
    """Shots on a base-2 log axis that also shows 0 (symlog, linear between 0 and 1, one doubling wide), ticked at
    the shot counts run: 1, 2, 4, 8 … are evenly spaced and a largest k like 57 sits just left of 64."""
    ax.set_xscale("symlog", base=2, linthresh=1, linscale=0.5)
    ax.set_xticks(list(shots), [str(k) for k in shots])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if shots:
        ax.set_xlim(-0.15 if min(shots) == 0 else min(shots) / 1.15, max(shots) * 1.15)


def template_spread(rows: Sequence[Mapping[str, Any]], prompt_rows: Sequence[Mapping[str, Any]], task: str) -> Figure:
    """Accuracy against shots for one task under each prompt: one thin line per (method, prompt), and in bold, in
    the same colour, the method's mean over the prompts (its main summary row)."""
    fig = Figure(figsize=(_WIDTH, _HEIGHT), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    mine = [r for r in prompt_rows if r["task"] == task and r.get("accuracy") is not None]
    several = {k for k in ("model", "run") if len({r.get(k) for r in mine}) > 1}  # said only when they differ

    def label(r: Mapping[str, Any]) -> str:
        return " · ".join([*(str(r.get(k)) for k in ("model", "run") if k in several), str(r["method"])])

    methods = sorted({label(r) for r in mine})
    shots = sorted({r["shots"] for r in mine})
    means = [r for r in rows if r["task"] == task and r.get("n_prompts") and r.get("accuracy") is not None]
    for i, name in enumerate(methods):
        color = f"C{i % 10}"
        lines: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for r in mine:
            if label(r) == name:
                lines[str(r["prompt"])].append(r)
        for line in lines.values():
            line = sorted(line, key=lambda r: r["shots"])
            ax.plot([r["shots"] for r in line], [r["accuracy"] for r in line], color=color, linewidth=0.8,
                    alpha=0.55, marker="o", markersize=2)
        bold = sorted((r for r in means if label(r) == name and r["shots"] in shots), key=lambda r: r["shots"])
        ax.plot([r["shots"] for r in bold], [r["accuracy"] for r in bold], color=color, linewidth=2.4,
                marker="o", markersize=4, label=f"{name} (mean of {len(lines)} prompts)")
    return _finish(fig, ax, shots, f"{task}: template spread (thin: one prompt each)", bool(methods))


def figure_bytes(fig: Figure, fmt: ImageFormat, dpi: float | None = None) -> bytes:
    """The figure as PNG, SVG or PDF bytes, with no timestamp in them; ``dpi``: the PNG's resolution (default: the
    figure's)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format=fmt, metadata=_NO_DATE[fmt], **({"dpi": dpi} if dpi else {}))
    return buf.getvalue()


def drawn(draw: Callable[[], Figure], formats: Sequence[ImageFormat] = ("png", "svg")) -> dict[str, bytes]:
    """format → image bytes of the figure ``draw`` makes, drawn and saved under this module's style."""
    with matplotlib.rc_context(_RC):
        fig = draw()
    return {fmt: figure_bytes(fig, fmt) for fmt in formats}


def slug(text: str) -> str:
    """A file-name-safe version of a task name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "task"


def tasks_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tasks in ``rows``, sorted."""
    return sorted({str(r["task"]) for r in rows})


def render_plots(rows: Sequence[Mapping[str, Any]],
                 formats: Sequence[ImageFormat] = ("png", "svg")) -> dict[str, dict[str, bytes]]:
    """task → format → image bytes, for every task in ``rows``."""
    return {task: drawn(lambda: accuracy_vs_shots(rows, task), formats) for task in tasks_of(rows)}


def render_spread_plots(rows: Sequence[Mapping[str, Any]], prompt_rows: Sequence[Mapping[str, Any]],
                        formats: Sequence[ImageFormat] = ("png", "svg")) -> dict[str, dict[str, bytes]]:
    """task → format → template-spread image bytes, for every task with a cell run under several prompts."""
    return {task: drawn(lambda: template_spread(rows, prompt_rows, task), formats) for task in tasks_of(prompt_rows)}


def write_images(images: Mapping[str, Mapping[str, bytes]], folder: str | Path, stem: str) -> list[Path]:
    """Write ``<stem>_<task>.<fmt>`` into ``folder`` for task → format → bytes; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, by_format in images.items():
        for fmt, data in by_format.items():
            path = folder / f"{stem}_{slug(task)}.{fmt}"
            path.write_bytes(data)
            paths.append(path)
    return paths


def write_plots(rows: Sequence[Mapping[str, Any]], folder: str | Path,
                formats: Sequence[ImageFormat] = ("png", "svg"),
                prompt_rows: Sequence[Mapping[str, Any]] = ()) -> list[Path]:
    """Write ``accuracy_vs_shots_<task>.<fmt>`` for every task into ``folder``, and ``template_spread_<task>.<fmt>``
    for every task with per-prompt rows (``prompt_rows``); returns the paths."""
    return (write_images(render_plots(rows, formats), folder, "accuracy_vs_shots")
            + write_images(render_spread_plots(rows, prompt_rows, formats), folder, "template_spread"))
