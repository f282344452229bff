"""Accuracy-vs-shots plots: the legend sits beside the axes inside the figure, and importing leaves the backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from iclkit.export.plots import accuracy_vs_shots, figure_bytes

# long legend entries (model · method), as when two models run on one task
ROWS = [{"model": model, "task": "t", "method": method, "shots": k, "n_episodes": 4, "n_queries": 32,
         "accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1, "macro_f1": acc, "ece": 0.1, "run": "r"}
        for model in ("smollm2-135m-instruct", "qwen2.5-0.5b-instruct layer -1 mean")
        for method, base in (("icl", 0.55), ("protonet", 0.5), ("knn", 0.45))
        for k, acc in ((1, base), (4, base + 0.1), (8, base + 0.2))]


@pytest.mark.parametrize("rows", [ROWS, [r for r in ROWS if r["model"] == "smollm2-135m-instruct"]])
def test_legend_beside_the_axes_and_inside_the_figure(rows: list) -> None:
    fig = accuracy_vs_shots(rows, "t")
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)  # the plot area
    assert legend.x0 > axes.x1 and not legend.overlaps(axes)
    whole = fig.bbox
    for box in (legend, ax.get_tightbbox(renderer)):  # nothing cut off: legend, labels, title
        assert whole.x0 - 0.5 <= box.x0 and box.x1 <= whole.x1 + 0.5
        assert whole.y0 - 0.5 <= box.y0 and box.y1 <= whole.y1 + 0.5
    assert axes.width > 3.0 * fig.dpi  # the legend widened the figure instead of squeezing the plot
    assert len(ax.get_legend().get_texts()) == len({(r["model"], r["method"]) for r in rows})


SCRIPT = """
import json, matplotlib
before = matplotlib.get_backend()
from iclkit.export.html_report import html_report
from iclkit.export.leaderboard import Leaderboard
from iclkit.export.plots import render_plots
images = render_plots(json.loads(ROWS))
page = html_report(Leaderboard(runs=(), rows=tuple(json.loads(ROWS)), comparisons=()))
print(json.dumps({"before": before, "after": matplotlib.get_backend(), "svg": len(images["t"]["svg"]),
                  "img": page.count("data:image/svg+xml")}))
"""


def test_importing_and_plotting_keep_the_users_backend() -> None:
    env = dict(os.environ, MPLBACKEND="svg")  # not Agg, so switching to Agg would show
    code = SCRIPT.replace("ROWS", repr(json.dumps(ROWS)))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["before"] == out["after"] == "svg"
    assert out["svg"] > 1000 and out["img"] == 1


def test_svg_and_png_are_deterministic() -> None:
    first = accuracy_vs_shots(ROWS, "t")
    again = accuracy_vs_shots(ROWS, "t")
    for fmt in ("svg", "png"):
        assert figure_bytes(first, fmt) == figure_bytes(again, fmt)


def test_shots_on_a_log_axis_that_shows_zero() -> None:
    """Doubling the shots moves a point by the same distance anywhere on the axis; 0 sits one doubling left of 1;
    ticks are the shot counts run (a largest k like 57 between 32 and 64, closer to 64)."""
    rows = [{**r, "shots": k} for r in ROWS[:1] for k in (0, 1, 2, 4, 8, 16, 32, 57)]
    fig = accuracy_vs_shots(rows, "t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    assert list(ax.get_xticks()) == [0, 1, 2, 4, 8, 16, 32, 57]
    x = {k: ax.transData.transform((k, 0.5))[0] for k in (0, 1, 2, 4, 8, 32, 57, 64)}
    step = x[2] - x[1]
    assert step > 0
    for a, b in ((1, 2), (2, 4), (4, 8), (32, 64), (0, 1)):
        assert x[b] - x[a] == pytest.approx(step, rel=1e-6)
    assert x[32] < x[57] < x[64] and x[64] - x[57] < x[57] - x[32]
