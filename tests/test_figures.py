"""Paper figures from a real run: a forest plot whose numbers are the paired comparisons (the leaderboard's and the
run's own comparison.json), learning curves by method family with ICL in every panel, every figure in PNG, SVG and
PDF at one- and two-column widths, decodable, with no text under 7 pt and nothing cut off."""

from __future__ import annotations

import io
import json
import re
import zlib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import matplotlib
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

from iclkit import evaluate
from iclkit.analysis.paired import format_p
from iclkit.cli import main
from iclkit.export.curves import learning_curves
from iclkit.export.figures import paper_bytes, paper_figures
from iclkit.export.paper_style import (MIN_FONT_PT, PNG_DPI, STYLE, WIDTHS, families, family, register_family,
                                       unregister_family)
from iclkit.export.forest import chosen, forest_plot
from iclkit.export.leaderboard import Leaderboard, build
from iclkit.export.plots import figure_bytes
from iclkit.learners import available

TASK = "movie-sentiment"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: ICL with the embedded model, kNN, ProtoNet and a linear probe on MiniLM embeddings, same
    episodes; the run writes its own paired comparisons against ICL (comparison.json)."""
    out = tmp_path_factory.mktemp("figures") / "run"
    evaluate(TASK, shots=(1, 2, 4), n_episodes=4, n_query=4, methods=("icl", "knn", "protonet", "linear"),
             embed="minilm", progress=False, out=out)
    return out


@pytest.fixture(scope="module")
def board(run_dir: Path) -> Leaderboard:
    return build([run_dir])


def _drawn(draw: Any) -> Any:
    """The figure as paper_bytes draws it (under the paper style), laid out as when saved."""
    with matplotlib.rc_context(STYLE):
        fig = draw()
    figure_bytes(fig, "png")  # runs the layout engine exactly as saving does
    return fig


def _forest_values(fig: Any) -> dict[tuple[int, str], dict[str, Any]]:
    """(shots, method) → what the forest plot draws for it: point, CI bar ends, and the numbers column's text."""
    ax, numbers = fig.axes
    (ci,) = [c for c in ax.collections if c.get_gid() == "ci"]
    (points,) = [c for c in ax.collections if c.get_gid() == "difference"]
    bars = {float(seg[0][1]): (float(seg[0][0]), float(seg[1][0])) for seg in ci.get_segments()}
    dots = {float(y): (float(x), face) for (x, y), face in zip(points.get_offsets(), points.get_facecolors())}
    out, shots = {}, None
    texts = [t.get_text() for t in numbers.get_yticklabels()]
    for y, label, text in zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()], texts):
        header = re.fullmatch(r"(\d+) shots?", label)
        if header:
            shots = int(header.group(1))
            continue
        out[(shots, label)] = {"diff": dots[float(y)][0], "filled": dots[float(y)][1][0] < 0.5,
                               "ci": bars[float(y)], "text": text}
    return out


def test_forest_plot_draws_the_paired_comparisons(run_dir: Path, board: Leaderboard) -> None:
    drawn = _forest_values(_drawn(lambda: forest_plot(board.comparisons, TASK, reference="icl")))
    # the run's own comparisons (iclkit.analysis.paired.compare on its episode results, written at run time): an
    # independent path to the same numbers from the leaderboard's, which pairs the records read back
    written = json.loads((run_dir / "comparison.json").read_text())["rows"]
    assert {(r["shots"], r["method"]) for r in written} == set(drawn) and len(drawn) == 9
    for r in written:
        d = drawn[(r["shots"], r["method"])]
        assert d["diff"] == pytest.approx(r["difference"], abs=5e-5)
        assert d["ci"] == pytest.approx((r["ci_low"], r["ci_high"]), abs=5e-5)
        assert d["filled"] == (r["p_value"] < 0.05)
        diff, lo, hi, p, n = re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\] +(<? ?[\d.]+) +(\d+)",
                                          d["text"]).groups()
        assert (diff, lo, hi) == tuple(f"{r[k]:+.3f}" for k in ("difference", "ci_low", "ci_high"))
        assert p == format_p(r["p_value"]) and int(n) == r["n_episodes"]
    for c in board.comparisons:  # and the leaderboard's table rows, to the digit
        d = drawn[(c["shots"], c["a"]["method"])]
        assert (d["diff"], *d["ci"]) == (c["mean_diff"], c["ci_low"], c["ci_high"])


def test_forest_plot_prefers_comparisons_within_a_run() -> None:
    def side(method: str, run: str) -> dict[str, Any]:
        return {"model": "m", "method": method, "run": run}

    def comparison(a: dict, b: dict) -> dict[str, Any]:
        return {"task": "t", "shots": 1, "a": a, "b": b, "n_episodes": 4, "mean_diff": 0.1, "ci_low": 0.0,
                "ci_high": 0.2, "p_value": 0.5}

    # runs A (icl, knn) and B (icl) on the same episodes: the leaderboard pairs all three entries
    within = comparison(side("knn", "A"), side("icl", "A"))
    references = comparison(side("icl", "B"), side("icl", "A"))
    across = comparison(side("knn", "A"), side("icl", "B"))
    assert chosen([within, references, across], "t") == [within, references]


def test_learning_curves_one_panel_per_family_with_icl_in_each(board: Leaderboard) -> None:
    fig = _drawn(lambda: learning_curves(board.rows, TASK, reference="icl"))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["metric-based", "linear probe"]
    rows = {(r["method"], r["shots"]): r["accuracy"] for r in board.rows}
    icl = [rows[("icl", k)] for k in (1, 2, 4)]
    for ax in panels:
        curves = {tuple(line.get_ydata()): line.get_color() for line in ax.get_lines()}
        assert curves[tuple(icl)] == "black"  # the reference, in every panel
        methods = {"metric-based": ("knn", "protonet"), "linear probe": ("linear",)}[ax.get_title()]
        assert set(curves) == {tuple(icl), *(tuple(rows[(m, k)] for k in (1, 2, 4)) for m in methods)}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["icl (reference)", "knn", "protonet", "linear"]


def test_learning_curves_of_the_reference_alone() -> None:
    rows = [{"model": "lm", "task": "t", "method": "icl", "shots": k, "accuracy": 0.5 + k / 20, "ci_low": 0.4,
             "ci_high": 0.8, "run": "r"} for k in (0, 1, 2)]
    fig = _drawn(lambda: learning_curves(rows, "t", reference="icl", width="single"))
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert ax.get_title() == "icl" and list(ax.get_lines()[0].get_ydata()) == [0.5, 0.55, 0.6]


def test_every_learner_has_a_family() -> None:
    assert {m: family(m) for m in available() if family(m) == "other"} == {}


def test_a_users_learner_joins_a_family_or_a_new_one() -> None:
    rows = [{"model": "m", "task": "t", "method": m, "shots": k, "accuracy": 0.6, "ci_low": 0.5, "ci_high": 0.7,
             "run": "r"} for m in ("icl", "mine", "theirs") for k in (1, 2)]
    register_family("mine", "metric-based")
    register_family("theirs", "retrieval")
    try:
        assert families()[-2:] == ["retrieval", "other"]
        fig = _drawn(lambda: learning_curves(rows, "t", reference="icl"))
        assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["metric-based", "retrieval"]
    finally:
        unregister_family("mine")
        unregister_family("theirs")
    assert family("mine") == family("theirs") == "other" and family("knn") == "metric-based"
    assert "retrieval" not in families()


def _texts(fig: Any) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("width", ["single", "double"])
@pytest.mark.parametrize("kind", ["forest", "curves"])
def test_sized_for_a_column_readable_and_nothing_cut_off(board: Leaderboard, width: str, kind: str) -> None:
    draw = {"forest": lambda: forest_plot(board.comparisons, TASK, reference="icl", width=width),
            "curves": lambda: learning_curves(board.rows, TASK, reference="icl", width=width)}[kind]
    fig = _drawn(draw)
    assert fig.get_size_inches()[0] == pytest.approx(WIDTHS[width])
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig)
    assert len(texts) > 10
    small = {t.get_text(): t.get_fontsize() for t in texts if t.get_fontsize() < MIN_FONT_PT}
    assert small == {}
    box = fig.bbox
    for t in texts:
        extent = t.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, f"cut off: {t.get_text()!r}"
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, f"cut off: {t.get_text()!r}"


def _check_pdf(data: bytes) -> tuple[float, float]:
    """Decode a PDF's structure without a PDF library: every cross-reference entry points at its object, every
    compressed stream inflates, a font is embedded; returns the page size in points."""
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    start = int(re.findall(rb"startxref\s+(\d+)", data)[-1])
    assert data[start:].startswith(b"xref")
    entries = re.findall(rb"(\d{10}) (\d{5}) n", data[start:])
    assert entries
    for offset, _ in entries:
        assert re.match(rb"\d+ 0 obj", data[int(offset):]), offset
    streams = re.findall(rb"/Filter /FlateDecode.*?>>\s*stream\r?\n(.*?)endstream", data, re.S)
    assert streams and all(zlib.decompressobj().decompress(s) for s in streams)
    assert b"/FontFile2" in data  # TrueType embedded (pdf.fonttype 42), not Type 3
    (box,) = re.findall(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)
    return float(box[0]), float(box[1])


@pytest.mark.parametrize("width", ["single", "double"])
def test_every_figure_in_three_formats_that_decode(board: Leaderboard, width: str) -> None:
    figures = paper_figures(board, width)
    assert sorted(figures) == [f"forest_{TASK}", f"learning_curves_{TASK}"]
    inches = WIDTHS[width]
    for name, by_format in figures.items():
        assert sorted(by_format) == ["pdf", "png", "svg"]
        png = imread(io.BytesIO(by_format["png"]))
        assert png.shape[1] == round(inches * PNG_DPI) and png[..., :3].std() > 0.05, name
        svg = ElementTree.fromstring(by_format["svg"])
        assert svg.tag.endswith("svg") and float(svg.get("width", "").removesuffix("pt")) == pytest.approx(inches * 72)
        assert len(list(svg.iter())) > 50
        page_w, page_h = _check_pdf(by_format["pdf"])
        assert page_w == pytest.approx(inches * 72) and page_h / 72 == pytest.approx(png.shape[0] / PNG_DPI, abs=0.02)


def test_figures_are_deterministic_and_leave_matplotlib_settings_alone(board: Leaderboard) -> None:
    before = dict(matplotlib.rcParams)
    first = paper_bytes(lambda: forest_plot(board.comparisons, TASK))
    again = paper_bytes(lambda: forest_plot(board.comparisons, TASK))
    assert first == again
    assert dict(matplotlib.rcParams) == before


def test_cli_writes_the_figures(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["leaderboard", str(run_dir), "--out", str(tmp_path / "board.md"),
                 "--figures", str(tmp_path / "figs")]) == 0
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == sorted(f"{kind}_{TASK}_{w}.{fmt}" for kind in ("forest", "learning_curves")
                           for w in ("1col", "2col") for fmt in ("pdf", "png", "svg"))
    assert "wrote 12 figure files" in capsys.readouterr().out
