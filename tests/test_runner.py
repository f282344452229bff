"""End to end on the real model: run files, reproducibility, the Python API and --config."""

from __future__ import annotations

import json

import pytest

import iclkit
from iclkit.cli import main

SMALL = dict(shots=(0, 2), n_episodes=2, n_query=4, methods=("icl",), progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    iclkit.evaluate(["movie-sentiment", "past-tense"], seed=3, out=out, **SMALL)
    return out


def test_run_folder_contents(run_dir):
    assert {p.name for p in run_dir.iterdir()} >= {"records.jsonl", "episodes.jsonl", "manifest.json",
                                                   "summary.json"}
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = summary["results"]
    assert len(rows) == 4  # 2 tasks × 2 shot counts
    for row in rows:
        assert {"task", "method", "shots", "n_episodes", "accuracy", "ci_low", "ci_high", "macro_f1"} <= set(row)
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"] and row["n_episodes"] == 2
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 2 * 4
    rec = next(r for r in records if r["task"] == "movie-sentiment")
    assert set(rec["scores"]) == {"negative", "positive"} and abs(sum(rec["probs"].values()) - 1) < 1e-4
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["weights_sha256"] and manifest["model"]["dtype"] == "float32"
    assert manifest["prompts"]["movie-sentiment"][0]["hash"] and manifest["episodes_hash"]["past-tense"]
    assert manifest["versions"]["torch"] and manifest["seed"] == 3
    assert manifest["config"]["episodes"]["shots"] == [0, 2]


def test_same_seed_identical_records_other_seed_other_episodes(run_dir, tmp_path):
    again = tmp_path / "b"
    iclkit.evaluate(["movie-sentiment", "past-tense"], seed=3, out=again, **SMALL)
    for name in ("records.jsonl", "episodes.jsonl", "summary.json"):
        assert (again / name).read_bytes() == (run_dir / name).read_bytes()
    # Several episodes per LM call (what a GPU run does): the queries of different episodes share batches, each
    # continuing its own demonstrations; same predictions, scores within float noise.
    packed = tmp_path / "c"
    iclkit.evaluate(["movie-sentiment", "past-tense"], seed=3, out=packed, episode_batch=3, **SMALL)
    one, many = ([json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()] for d in (run_dir, packed))
    assert [(r["query_id"], r["prediction"]) for r in one] == [(r["query_id"], r["prediction"]) for r in many]
    assert max(abs(a["scores"][k] - b["scores"][k]) for a, b in zip(one, many) for k in a.get("scores", {})) < 1e-4
    other = iclkit.evaluate("movie-sentiment", seed=4, **SMALL)
    first = json.loads((run_dir / "manifest.json").read_text())["episodes_hash"]["movie-sentiment"]
    assert other.manifest["episodes_hash"]["movie-sentiment"] != first


def test_episodes_file_reloads_with_the_same_hash(run_dir):
    eps = iclkit.read_episodes(run_dir / "episodes.jsonl")
    from iclkit.types import episodes_hash

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert episodes_hash([e for e in eps if e.task == "past-tense"]) == manifest["episodes_hash"]["past-tense"]


def test_config_file_takes_the_same_options(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("task: movie-sentiment\nmethods: icl\nshots: [0, 2]\nepisodes: 2\nn-query: 4\nseed: 3\n"
                                       f"out: {tmp_path / 'c'}\nprogress: false\n")
    assert main(["run", "--config", str(tmp_path / "run.yaml")]) == 0
    table = capsys.readouterr().out
    assert "| movie-sentiment | icl | 2 | 2 | 8 |" in table
    rows = json.loads((tmp_path / "c" / "summary.json").read_text())["results"]
    assert [r["shots"] for r in rows] == [0, 2]
