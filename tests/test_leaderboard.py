"""Leaderboard from real runs: rows, paired comparisons recomputed by hand, JSON Schema, CSV/Markdown, CLI, plots."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

from iclkit import evaluate
from iclkit.cli import main
from iclkit.errors import IclkitError
from iclkit.export.leaderboard import build, render, schema
from iclkit.export.plots import render_plots
from iclkit.analysis.stats import paired_test

SMALL = dict(tasks="movie-sentiment", shots=(0, 1), n_episodes=3, n_query=3, model="smollm2-135m-instruct",
             progress=False)


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


def test_comparisons_pair_the_same_episodes(runs: tuple[Path, Path]) -> None:
    board = build(runs)
    assert {c["shots"] for c in board.comparisons} == {0, 1}
    for c in board.comparisons:
        acc: dict[str, dict[str, list[bool]]] = {}
        for run in runs:
            per: dict[str, list[bool]] = defaultdict(list)
            for line in (run / "records.jsonl").read_text().splitlines():
                rec = json.loads(line)
                if rec["shots"] == c["shots"]:
                    per[rec["episode_hash"]].append(rec["correct"])
            acc[run.name] = per
        a, b = acc[c["a"]["run"]], acc[c["b"]["run"]]
        hashes = sorted(a)
        assert sorted(b) == hashes and c["n_episodes"] == len(hashes) == 3
        expected = paired_test([sum(a[h]) / len(a[h]) for h in hashes], [sum(b[h]) / len(b[h]) for h in hashes])
        assert c["mean_diff"] == pytest.approx(expected.mean_diff, abs=1e-4)
        assert c["p_value"] == pytest.approx(expected.p_value, abs=1e-4)


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
