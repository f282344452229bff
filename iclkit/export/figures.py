"""Figures a paper can use: a forest plot of paired differences and learning curves by method family, per task.

Each is drawn at a paper's column width — ``single`` (3.3 in) or ``double`` (6.9 in) — with no text smaller than
7 pt at that size (iclkit.export.paper_style), and saved as PNG (300 dpi), SVG and PDF (TrueType fonts). The
figure's width is fixed and its height follows its content (rows of a forest plot, rows of panels); matplotlib's
constrained layout fits labels and legends inside, so a figure is never cropped or scaled after drawing.

The plotting modules (iclkit.export.forest, iclkit.export.curves) read only the leaderboard's rows and paired
comparisons: the numbers drawn are those of its tables, computed once in iclkit.analysis.paired.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import matplotlib

from iclkit.export.curves import learning_curves
from iclkit.export.forest import forest_plot
from iclkit.export.paper_style import FORMATS, PNG_DPI, STYLE, SUFFIX, Width
from iclkit.export.plots import ImageFormat, figure_bytes, slug, tasks_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from iclkit.export.leaderboard import Leaderboard

FigureKind = Literal["learning_curves", "forest"]


def paper_bytes(draw: Callable[[], Figure], formats: Sequence[ImageFormat] = FORMATS) -> dict[str, bytes]:
    """format → bytes of the figure ``draw`` makes, drawn under the paper style (a context: global settings are
    left as they were); PNG at ``PNG_DPI``."""
    with matplotlib.rc_context(STYLE):
        fig = draw()
    return {fmt: figure_bytes(fig, fmt, dpi=PNG_DPI if fmt == "png" else None) for fmt in formats}


def paper_figures(lb: Leaderboard, width: Width = "double", formats: Sequence[ImageFormat] = FORMATS,
                  kinds: Sequence[FigureKind] = ("learning_curves", "forest")) -> dict[str, dict[str, bytes]]:
    """name → format → bytes: ``learning_curves_<task>`` for every task and ``forest_<task>`` for every task with
    paired comparisons, against the leaderboard's reference method (only the ``kinds`` asked for)."""
    out: dict[str, dict[str, bytes]] = {}
    for task in tasks_of(lb.rows):
        if "learning_curves" in kinds:
            out[figure_name("learning_curves", task)] = paper_bytes(
                partial(learning_curves, lb.rows, task, reference=lb.reference, width=width), formats)
        if "forest" in kinds and any(c["task"] == task for c in lb.comparisons):
            out[figure_name("forest", task)] = paper_bytes(
                partial(forest_plot, lb.comparisons, task, reference=lb.reference, width=width), formats)
    return out


def figure_name(kind: FigureKind, task: str) -> str:
    """A figure's name in ``paper_figures`` and its file stem: ``forest_sst2``."""
    return f"{kind}_{slug(task)}"


def write_paper_figures(lb: Leaderboard, folder: str | Path, widths: Sequence[Width] = ("single", "double"),
                        formats: Sequence[ImageFormat] = FORMATS) -> list[Path]:
    """Write ``<name>_1col.<fmt>`` and ``<name>_2col.<fmt>`` for every figure of ``paper_figures``; returns the
    paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for width in widths:
        for name, by_format in paper_figures(lb, width, formats).items():
            for fmt, data in by_format.items():
                path = folder / f"{name}_{SUFFIX[width]}.{fmt}"
                path.write_bytes(data)
                paths.append(path)
    return paths
