"""The export format registry: a format registered in a few lines is offered by the CLI; unknown ones are refused."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

import pytest

from iclkit import evaluate
from iclkit.cli import main
from iclkit.errors import IclkitError
from iclkit.export.formats import available_formats, register_format, render, unregister_format
from iclkit.export.leaderboard import ROW_FIELDS, Leaderboard, build


def to_tsv(lb: Leaderboard) -> str:
    """The leaderboard's rows as tab-separated values."""
    return "".join("\t".join("" if v is None else str(v) for v in row) + "\n"
                   for row in [ROW_FIELDS, *[[r[f] for f in ROW_FIELDS] for r in lb.rows]])


@pytest.fixture
def tsv() -> Iterator[str]:
    register_format("tsv")(to_tsv)
    yield "tsv"
    unregister_format("tsv")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of the embedded model: 2 episodes of 2 queries at 0 and 1 shots."""
    out = tmp_path_factory.mktemp("registry") / "run"
    evaluate("movie-sentiment", shots=(0, 1), n_episodes=2, n_query=2, methods=("icl",), progress=False, out=out)
    return out


def test_a_registered_format_is_offered_by_the_cli(tsv: str, run_dir: Path, tmp_path: Path) -> None:
    assert tsv in available_formats()
    out = tmp_path / "board.tsv"
    assert main(["leaderboard", str(run_dir), "--format", tsv, "--out", str(out)]) == 0
    got = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")), delimiter="\t"))
    board = build([run_dir])
    assert len(got) == len(board.rows) == 2
    assert got == [{f: "" if r[f] is None else str(r[f]) for f in ROW_FIELDS} for r in board.rows]
    assert [(g["method"], int(g["shots"])) for g in got] == [("icl", 0), ("icl", 1)]


def test_unregistered_and_unknown_formats_are_refused(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert "tsv" not in available_formats()  # the fixture took it away again
    assert {"md", "csv", "json", "html"} <= set(available_formats())
    with pytest.raises(SystemExit) as e:
        main(["leaderboard", str(run_dir), "--format", "tsv"])
    assert e.value.code == 2
    assert "invalid choice: 'tsv'" in capsys.readouterr().err
    with pytest.raises(IclkitError, match="unknown format 'tsv'") as err:
        render(build([run_dir]), "tsv")
    assert err.value.field == "format" and all(f in (err.value.hint or "") for f in ("csv", "html", "json", "md"))


def test_built_in_formats_render_through_the_registry(run_dir: Path) -> None:
    board = build([run_dir])
    assert render(board, "json").startswith('{\n  "schema": "iclkit-leaderboard"')
    assert render(board, "csv").splitlines()[0] == ",".join(ROW_FIELDS)
    assert render(board, "md").startswith("| model | task | method |")
    assert render(board, "html").startswith("<!DOCTYPE html>")
