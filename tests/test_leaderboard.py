"""Leaderboard from real runs: rows, paired comparisons against hand computation, backbones, JSON Schema, formats."""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from iclkit import evaluate
from iclkit.analysis.summary import SUMMARY_VERSION, records, summarize
from iclkit.cli import main
from iclkit.errors import IclkitError
from iclkit.export.formats import render
from iclkit.export.json_export import schema
from iclkit.export.leaderboard import build
from iclkit.export.plots import render_plots
from iclkit.files import write_json, write_jsonl
from iclkit.types import EpisodeResult, Prediction

SMALL = dict(tasks="movie-sentiment", shots=(0, 1), n_episodes=3, n_query=3, model="smollm2-135m-instruct",
             methods=("icl",), progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real runs of the embedded model on the same episodes: summed vs per-token label log-probs."""
    root = tmp_path_factory.mktemp("runs")
    evaluate(out=root / "sum", normalize="sum", **SMALL)
    evaluate(out=root / "mean", normalize="mean", **SMALL)
    return root / "sum", root / "mean"


def test_rows_come_from_each_run_summary(runs: tuple[Path, Path]) -> None:
    board = build(runs)
    assert len(board.rows) == 4
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())["results"]
        mine = [r for r in board.rows if r["run"] == run.name]
        assert [(r["shots"], r["accuracy"], r["ci_low"], r["ci_high"], r["ece"], r["n_queries"]) for r in mine] == \
            [(s["shots"], s["accuracy"], s["ci_low"], s["ci_high"], s["ece"], s["n_queries"]) for s in summary]
        assert all(r["model"] == "smollm2-135m-instruct" and r["n_episodes"] == 3 for r in mine)


def _episode(method: str, h: str, correct: int, shots: int, n: int = 4) -> EpisodeResult:
    """An episode result with ``correct`` of ``n`` queries right."""
    preds = tuple(Prediction(f"q{i}", "a", "a" if i < correct else "b", i < correct) for i in range(n))
    return EpisodeResult(f"t/k{shots}/{h}", h, "t", method, shots, ("a", "b"), preds)


def _write_run(folder: Path, results: list[EpisodeResult], described: dict[str, Any]) -> Path:
    """A run folder as ``iclkit run --out`` writes it (records, summary, manifest) from hand-built results."""
    write_jsonl(folder / "records.jsonl", [rec for r in results for rec in records(r)])
    write_json(folder / "summary.json", {"version": SUMMARY_VERSION, "results": summarize(results)})
    write_json(folder / "manifest.json", {"config": {"methods": sorted({r.method for r in results})}, "seed": 0,
                                          "tasks": {"t": {}}, "model": None, "versions": {},
                                          "methods": {f"t/{m}": d for m, d in described.items()}})
    return folder


def _sign_flip_p(diffs: list[float]) -> float:
    """Two-sided p of mean(diff) = 0 by enumerating every sign assignment (independent of scipy)."""
    observed = abs(sum(diffs))
    flips = list(itertools.product((1, -1), repeat=len(diffs)))
    return sum(abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12 for signs in flips) / len(flips)


BACKBONE = "smollm2-135m-instruct layer -1 mean"
# correct answers out of 4 per episode at 1 shot; icl ran h0..h7, knn ran h0..h5 and h8, h9
ICL = {"h0": 2, "h1": 1, "h2": 3, "h3": 2, "h4": 2, "h5": 1, "h6": 4, "h7": 0}
KNN = {"h0": 3, "h1": 2, "h2": 3, "h3": 4, "h4": 1, "h5": 3, "h8": 4, "h9": 4}


@pytest.fixture(scope="module")
def hand_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two run folders: ICL in one (described the old way), knn with a backbone and linear without in the other.

    At 2 shots knn is right on all 12 episodes and ICL on none, so the exact p-value is 2 / 2**12."""
    root = tmp_path_factory.mktemp("hand")
    icl = [_episode("icl", h, c, 1) for h, c in ICL.items()] + [_episode("icl", f"g{i}", 0, 2) for i in range(12)]
    base = ([_episode("knn", h, c, 1) for h, c in KNN.items()] + [_episode("knn", f"g{i}", 4, 2) for i in range(12)]
            + [_episode("linear", h, 2, 1) for h in ICL])
    a = _write_run(root / "icl-run", icl, {"icl": {"method": "icl", "model": {"model": "smollm2-135m-instruct"}}})
    b = _write_run(root / "base-run", base, {"knn": {"method": "knn", "backbone": BACKBONE},
                                             "linear": {"method": "linear", "features": {"embed": "lm"}}})
    return a, b


def test_comparisons_pair_episodes_by_hash_as_computed_by_hand(hand_runs: tuple[Path, Path]) -> None:
    board = build(hand_runs, seed=5)
    by = {(c["shots"], c["a"]["method"]): c for c in board.comparisons}
    assert set(by) == {(1, "knn"), (1, "linear"), (2, "knn")}
    c = by[(1, "knn")]
    assert c["a"] == {"model": BACKBONE, "method": "knn", "run": "base-run"}
    assert c["b"] == {"model": "smollm2-135m-instruct", "method": "icl", "run": "icl-run"}
    # by hand over h0..h5: knn − icl = (+1, +1, 0, +2, −1, +2) / 4 queries; h6, h7 (icl) and h8, h9 (knn) unpaired
    assert (c["n_episodes"], c["n_dropped"]) == (6, 4)
    assert c["mean_diff"] == pytest.approx(1.25 / 6, abs=1e-4)
    assert c["p_value"] == pytest.approx(_sign_flip_p([0.25, 0.25, 0.0, 0.5, -0.25, 0.5]), abs=1e-4)
    assert c["ci_low"] <= c["mean_diff"] <= c["ci_high"]
    # linear ran all eight of icl's episodes: nothing unpaired; 2 right of 4 each time
    lin = by[(1, "linear")]
    assert (lin["n_episodes"], lin["n_dropped"], lin["a"]["model"]) == (8, 0, None)
    assert lin["mean_diff"] == pytest.approx(sum(0.5 - v / 4 for v in ICL.values()) / 8, abs=1e-4)
    assert lin["p_value"] == pytest.approx(_sign_flip_p([0.5 - v / 4 for v in ICL.values()]), abs=1e-4)
    assert by[(2, "knn")]["p_value"] == pytest.approx(2 / 2**12, abs=1e-4)
    jsonschema.validate(board.to_dict(), schema())


def test_backbone_fills_the_model_column_in_every_format(hand_runs: tuple[Path, Path]) -> None:
    board = build(hand_runs)
    models = {(r["method"], r["shots"]): r["model"] for r in board.rows}
    assert models == {("icl", 1): "smollm2-135m-instruct", ("icl", 2): "smollm2-135m-instruct",
                      ("knn", 1): BACKBONE, ("knn", 2): BACKBONE, ("linear", 1): None}
    assert [r["model"] for r in json.loads(render(board, "json"))["rows"]] == [r["model"] for r in board.rows]
    assert [r["model"] or None for r in csv.DictReader(io.StringIO(render(board, "csv")))] == \
        [r["model"] for r in board.rows]
    md_rows = [line.split(" | ") for line in render(board, "md").splitlines() if line.startswith("| ")]
    assert sum(cells[0] == f"| {BACKBONE}" and cells[2] == "knn" for cells in md_rows) == 2

    class Models(HTMLParser):
        """First cell of every row of the results table."""

        def __init__(self) -> None:
            super().__init__()
            self.inside, self.first, self.cells = False, False, []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "table":
                self.inside = dict(attrs).get("id") == "leaderboard"
            self.first = self.first or (self.inside and tag == "tr")
            if self.inside and tag == "td" and self.first:
                self.cells.append("")

        def handle_endtag(self, tag: str) -> None:
            if tag == "td" and self.first:
                self.first = False

        def handle_data(self, data: str) -> None:
            if self.first and self.cells:
                self.cells[-1] += data

    parser = Models()
    parser.feed(render(board, "html"))
    assert parser.cells == [r["model"] or "–" for r in board.rows]


def test_small_p_values_print_as_below_a_thousandth(hand_runs: tuple[Path, Path]) -> None:
    board = build(hand_runs)
    md = render(board, "md")
    (line,) = [ln for ln in md.splitlines() if ln.startswith("| t | 2 |")]
    assert line.rsplit("|", 2)[1].strip() == "< 0.001"
    assert "| 6 | 4 |" in md  # paired and unpaired episodes of knn vs icl at 1 shot
    table = render(board, "html").split('id="comparisons"', 1)[1].split("</table>", 1)[0]
    p_cells = [row.rsplit("<td", 1)[1] for row in table.split("</tr>") if "<td" in row]
    assert len(p_cells) == 3 and sum(c.endswith(">&lt; 0.001</td>") for c in p_cells) == 1
    assert not any(c.endswith(">0.000</td>") for c in p_cells)


def test_json_follows_the_versioned_schema(runs: tuple[Path, Path]) -> None:
    doc = json.loads(render(build(runs), "json"))
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(doc, schema())
    assert doc["schema_version"] == 1
    broken = dict(doc, rows=[dict(doc["rows"][0], accuracy=1.5)])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema())


def test_csv_and_markdown(runs: tuple[Path, Path]) -> None:
    board = build(runs)
    rows = list(csv.DictReader(io.StringIO(render(board, "csv"))))
    assert [(r["run"], int(r["shots"]), float(r["accuracy"])) for r in rows] == \
        [(r["run"], r["shots"], r["accuracy"]) for r in board.rows]
    md = render(board, "md")
    assert md.count("| smollm2-135m-instruct | movie-sentiment | icl |") == 4
    assert "Paired differences" in md


def test_cli_writes_every_format(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for fmt in ("md", "csv", "json", "html"):
        out = tmp_path / f"board.{fmt}"
        assert main(["leaderboard", *map(str, runs), "--format", fmt, "--out", str(out)]) == 0
        assert out.read_text() == render(build(runs), fmt)  # deterministic: nothing time-dependent
    assert main(["leaderboard", str(runs[0])]) == 0
    assert "| movie-sentiment |" in capsys.readouterr().out


def test_bad_run_folders_are_user_errors(runs: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(IclkitError, match="no such run folder"):
        build([tmp_path / "missing"])
    broken = tmp_path / "broken"
    shutil.copytree(runs[0], broken)
    (broken / "summary.json").write_text("{not json")
    with pytest.raises(IclkitError, match="malformed JSON") as e:
        build([broken])
    assert e.value.file == str(broken / "summary.json")
    assert main(["leaderboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and "Traceback" not in err


def test_run_folder_has_plots_and_they_are_deterministic(runs: tuple[Path, Path]) -> None:
    png = runs[0] / "plots" / "accuracy_vs_shots_movie-sentiment.png"
    svg = runs[0] / "plots" / "accuracy_vs_shots_movie-sentiment.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()
    summary = json.loads((runs[0] / "summary.json").read_text())["results"]
    images = render_plots(summary)["movie-sentiment"]
    assert images["png"] == png.read_bytes() and images["svg"] == svg.read_bytes()


METRIC = '''
import datasets
import evaluate


class FirstLetter(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="share of predictions whose first letter matches", citation="",
                                   inputs_description="", features=datasets.Features(
                                       {"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"first_letter": sum(p[:1] == r[:1] for p, r in zip(predictions, references)) / len(predictions)}
'''


def test_users_own_evaluate_metric_by_path(runs: tuple[Path, Path], tmp_path: Path) -> None:
    script = tmp_path / "first_letter.py"
    script.write_text(METRIC)
    board = build(runs[:1], metrics=[script])
    for row in board.rows:
        # labels are negative/positive: first letters differ exactly when the label differs
        assert row["metrics"]["first_letter"]["value"] == pytest.approx(row["accuracy"], abs=1e-4)
    jsonschema.validate(board.to_dict(), schema())
    assert "first_letter" in render(board, "md") and "first_letter_ci_low" in render(board, "csv")
    with pytest.raises(IclkitError, match="metric"):
        build(runs[:1], metrics=[tmp_path / "nope.py"])
