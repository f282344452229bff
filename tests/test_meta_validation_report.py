"""A run's meta-learners record their meta-validation curve (step 0 first) and the step kept in the manifest; the
leaderboard carries them (JSON schema) and the HTML report draws them."""

from __future__ import annotations

import json

import jsonschema

from iclkit.export.html_report import html_report
from iclkit.export.json_export import schema
from iclkit.export.leaderboard import build
from iclkit.export.meta_validation import sparkline
from iclkit.runner.pipeline import evaluate


def test_run_records_meta_validation_and_the_report_shows_it(tmp_path, one_torch_thread):
    out = tmp_path / "run"
    evaluate("movie-sentiment", shots=[1], n_episodes=2, n_query=4, methods=["protonet", "protonet-proj"],
             meta_train="self-supervised", embed="minilm", meta_episodes=24, meta_val_episodes=8,
             protonet_steps=10, out=out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    described = manifest["methods"]["movie-sentiment/protonet-proj"]
    curve = described["meta_val"]["curve"]
    assert [s for s, _ in curve] == [0, 10] and described["meta_val"]["best_step"] in (0, 10)
    assert described["meta_train_data"]["n_val_episodes"] == 8 and described["meta_train_data"]["val_classes"]
    assert "meta_val" not in manifest["methods"]["movie-sentiment/protonet"]  # nothing meta-trained
    board = build([out])
    jsonschema.validate(board.to_dict(), schema())
    (row,) = board.meta_training
    assert (row["method"], row["curve"], row["n_val_episodes"]) == ("protonet-proj", curve, 8)
    page = html_report(board)
    assert "<h2>Meta-validation</h2>" in page and 'id="meta-validation"' in page
    assert f"{curve[0][1]:.3f}" in page  # the floor's meta-validation accuracy


def test_sparkline_marks_the_floor_and_the_step_kept():
    svg = sparkline([(0, 0.5), (25, 0.7), (50, 0.6)], best=25)
    assert svg.count("<circle") == 2 and "0.500 at step 0" in svg and "0.700 best" in svg
    assert sparkline([], None) == ""
