"""The HTML report opened in real headless Chromium: table rows, sorting script, plots decode, screenshot not blank,
and a wide report fits a 1,400-px window without scrolling sideways."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from iclkit import evaluate
from iclkit.export.formats import render
from iclkit.export.leaderboard import build


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Debian `chromium` is not installed: `apt-get install -y chromium` (.ci/run installs it); "
                    "the HTML report check needs a real browser")
    return exe


def _browse(page: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", "--window-size=1280,1000", *extra, page]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)


class _Cells(HTMLParser):
    """Cells of the table with the given id, row by row."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.rows, self.cell = table_id, False, [], None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data


def _rows(dom: str) -> list[list[str]]:
    parser = _Cells("leaderboard")
    parser.feed(dom)
    return [r for r in parser.rows if r]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    evaluate("movie-sentiment", shots=(0, 1, 2), n_episodes=2, n_query=2, methods=("icl",), progress=False,
             out=root / "run")
    page = root / "report.html"
    page.write_text(render(build([root / "run"]), "html"), encoding="utf-8")
    return page


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "@import" not in text and "<link" not in text
    assert text.count('src="data:image/svg+xml;base64,') == 1


def test_chromium_renders_table_and_plots(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    res = _browse(report.as_uri(), tmp_path, f"--screenshot={shot}")
    assert shot.is_file(), res.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1000, 1280)
    ink = (pixels < 0.9).any(axis=-1).mean()
    assert ink > 0.02 and float(np.std(pixels)) > 0.05, "screenshot is blank"

    dom = _browse(report.as_uri(), tmp_path, "--dump-dom").stdout
    assert 'data-rendered-images="1"' in dom  # the embedded plot decoded in the browser
    rows = _rows(dom)
    assert [r[1:4] for r in rows] == [["movie-sentiment", "icl", str(k)] for k in (0, 1, 2)]


def test_sorting_script_runs_in_the_browser(report: Path, tmp_path: Path) -> None:
    by_shots = _rows(_browse(report.as_uri() + "#sort=shots:desc", tmp_path, "--dump-dom").stdout)
    assert [r[3] for r in by_shots] == ["2", "1", "0"]
    by_acc = _rows(_browse(report.as_uri() + "#sort=accuracy:asc", tmp_path, "--dump-dom").stdout)
    acc = [float(r[6]) for r in by_acc]
    assert acc == sorted(acc) and len(acc) == 3


def _report(smol: Any, root: Path, **run: Any) -> Path:
    """The HTML report of a movie-sentiment run with the session's model (loaded once for all tests)."""
    import iclkit.runner.model

    original = iclkit.runner.model.load_lm
    iclkit.runner.model.load_lm = lambda spec: smol
    try:
        evaluate("movie-sentiment", n_query=2, progress=False, out=root / "run", **run)
    finally:
        iclkit.runner.model.load_lm = original
    page = root / "report.html"
    page.write_text(render(build([root / "run"]), "html"), encoding="utf-8")
    return page


@pytest.fixture(scope="module")
def fair_report(smol, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with calibrated ICL outputs under two prompts: the report's Calibration table and template spread."""
    return _report(smol, tmp_path_factory.mktemp("fair"), shots=(0, 1), n_episodes=2, methods=("icl",),
                   calibration="none,contextual,batch", prompt="sentiment,sentiment-opinion")


def test_chromium_renders_calibration_table_and_template_spread(fair_report: Path, tmp_path: Path) -> None:
    text = fair_report.read_text()
    assert text.count('src="data:image/svg+xml;base64,') == 3 and "<h2>Calibration</h2>" in text
    dom = _browse(fair_report.as_uri(), tmp_path, "--dump-dom").stdout
    assert 'data-rendered-images="3"' in dom  # learning curves, forest plot and template spread all decode
    parser = _Cells("calibration")
    parser.feed(dom)
    rows = [r for r in parser.rows if r]
    assert sorted((r[2], r[3], r[4]) for r in rows) == [(k, m, "icl") for k in ("0", "1")
                                                        for m in ("icl+batch (transductive)", "icl+contextual")]
    for r in rows:
        diff, ci, f1 = float(r[6]), r[7], float(r[9])
        lo, hi = (float(x) for x in ci.strip("[]").split(","))
        assert lo <= diff <= hi and -1 <= f1 <= 1 and 0 < float(r[8].replace("< ", "")) <= 1
    for r in _rows(dom):  # "across prompts": min–max (sd …, 2 prompts); the mean over prompts lies within
        span, rest = r[8].split(" (sd ")
        low, high = (float(x) for x in span.split("–"))
        assert low <= float(r[6]) <= high and rest.endswith(", 2 prompts)"), r
    shot = tmp_path / "fair.png"
    _browse(fair_report.as_uri() + "#sort=k-6:desc", tmp_path, f"--screenshot={shot}")
    pixels = imread(shot)[..., :3]
    assert (pixels < 0.9).any(axis=-1).mean() > 0.02, "screenshot is blank"


@pytest.fixture(scope="module")
def uses_report(smol, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with label probes and two orders: the report's "What each learner uses" section."""
    return _report(smol, tmp_path_factory.mktemp("uses"), shots=(1, 2), n_episodes=3, methods=("icl", "protonet"),
                   labels="gold,random,flipped", orders=2, embed="minilm")


def test_chromium_renders_what_each_learner_uses(uses_report: Path, tmp_path: Path) -> None:
    text = uses_report.read_text()
    assert "<h2>What each learner uses</h2>" in text and 'alt="what each learner uses, movie-sentiment"' in text
    dom = _browse(uses_report.as_uri(), tmp_path, "--dump-dom").stdout
    assert 'data-rendered-images="3"' in dom  # learning curves, forest plot and the uses figure all decode
    shot = tmp_path / "uses.png"
    _browse(uses_report.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,4000")
    pixels = imread(shot)[..., :3]
    lower = pixels[1000:]  # the section sits below the first screen: it is drawn, not blank
    assert (lower < 0.9).any(axis=-1).mean() > 0.02, "the uses section is blank"


def test_wide_report_fits_1400_px_and_every_figure_decodes(uses_report: Path, tmp_path: Path) -> None:
    """Two runs (a run column and cross-run comparisons), long backbone and run names, a spread column and two
    user metrics: at 1,400 px the page is no wider than the window, and every embedded figure decodes."""
    run = uses_report.parent / "run"
    twin = Path(shutil.copytree(run, tmp_path / "movie-sentiment-smollm2-135m-instruct-minilm-probes-orders-rerun"))
    board = build([run, twin])
    long = "smollm2-135m-instruct layer -1 mean (a backbone with a long name)"
    rows = tuple({**r, "model": long if r["method"] != "icl" else r["model"], "n_prompts": 3, "prompt_min": 0.5,
                  "prompt_max": 0.75, "prompt_std": 0.125,
                  "metrics": {"exact_match_with_a_long_name": {"value": 0.5}, "f1_macro_long": {"value": 0.5}}}
                 for r in board.rows)
    page = tmp_path / "wide.html"
    page.write_text(render(dataclasses.replace(board, rows=rows), "html"), encoding="utf-8")
    n_images = page.read_text().count("<img ")
    assert n_images == 3  # learning curves, forest plot, what each learner uses

    dom = _browse(page.as_uri(), tmp_path, "--dump-dom", "--window-size=1400,1000").stdout
    assert f'data-rendered-images="{n_images}"' in dom  # every figure decoded in the browser
    scroll, window = (int(x) for x in re.search(r'data-scroll-width="(\d+)/(\d+)"', dom).groups())
    assert 1300 < window <= 1400 and scroll <= window, f"the page scrolls sideways: {scroll} px in {window} px"
    shot = tmp_path / "wide.png"
    _browse(page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1400,1000")
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1000, 1400) and (pixels < 0.9).any(axis=-1).mean() > 0.02, "screenshot is blank"
