"""``iclkit.load_run``: a real run folder read back as typed values that give back every line as written, data
frames whose numbers match the run's own summary, and user errors that name the file, line and field."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import iclkit
from iclkit import evaluate, load_run
from iclkit.episodes import read_episodes
from iclkit.errors import IclkitError
from iclkit.results import Manifest, Record, SavedRun, SummaryRow, read_records


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: ICL with the embedded model under two prompts (per-prompt rows, ICL's label_mass) and kNN on
    MiniLM embeddings (a data budget), on the same episodes."""
    out = tmp_path_factory.mktemp("results") / "run"
    evaluate("movie-sentiment", shots=(1, 2), n_episodes=3, n_query=4, methods=("icl", "knn"), embed="minilm",
             prompt="sentiment,sentiment-opinion", progress=False, out=out)
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_exported_from_the_package() -> None:
    assert "load_run" in iclkit.__all__ and iclkit.load_run is load_run
    assert "SavedRun" in iclkit.__all__ and iclkit.SavedRun is SavedRun


def test_round_trip_gives_back_every_file_as_written(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.path == run_dir
    written = (run_dir / "records.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.dumps(r.to_dict(), ensure_ascii=False) for r in run.records] == written  # byte for byte
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r.to_dict() for r in run.summary] == summary["results"]
    assert [r.to_dict() for r in run.prompt_summary] == summary["prompts"] and run.prompt_summary
    assert run.manifest.to_dict() == json.loads((run_dir / "manifest.json").read_text())
    assert list(run.episodes) == read_episodes(run_dir / "episodes.jsonl")
    assert {r.episode_hash for r in run.records} == {e.hash for e in run.episodes}


def test_a_probe_records_defaults_stay_written(tmp_path: Path) -> None:
    """A run with --labels writes "labels": "gold" and "permutation": 0 explicitly; reading keeps them."""
    line = {"task": "t", "method": "m", "shots": 1, "episode_id": "t/k1/e0", "episode_hash": "h", "query_id": "q",
            "gold": "a", "prediction": "b", "correct": False, "labels": "gold", "permutation": 0, "order": [1, 0]}
    (tmp_path / "records.jsonl").write_text(json.dumps(line) + "\n")
    (rec,) = read_records(tmp_path / "records.jsonl")
    assert (rec.labels, rec.permutation, rec.extra) == ("gold", 0, {"order": [1, 0]})
    assert rec.to_dict() == line and list(rec.to_dict()) == list(line)
    built = Record("t", "m", 1, "t/k1/e0", "h", "q", "a", "b", False)  # made in code: no defaults written
    assert "labels" not in built.to_dict() and built == dataclasses.replace(rec, extra={})


def test_values_are_typed_and_frozen(run_dir: Path) -> None:
    run = load_run(run_dir)
    rec, row = run.records[0], run.summary[0]
    assert isinstance(rec, Record) and isinstance(row, SummaryRow) and isinstance(run.manifest, Manifest)
    assert isinstance(rec.correct, bool) and isinstance(rec.shots, int) and isinstance(row.accuracy, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.correct = not rec.correct  # type: ignore[misc]
    icl = [r for r in run.records if r.method == "icl"]
    assert {r.prompt for r in icl} == {"sentiment", "sentiment-opinion"} and all(r.prompt_hash for r in icl)
    assert all(set(r.scores) == set(r.probs) == {"negative", "positive"} for r in icl)
    assert all("label_mass" in r.extra for r in icl)  # a method's own per-query field stays, under extra
    knn = [r for r in run.records if r.method == "knn"]
    assert knn and all(r.prompt is None and r.extra.get("meta_train") == "none" for r in knn)
    assert run.manifest.seed == 0 and run.manifest.model is not None
    assert set(run.manifest.methods) == {"movie-sentiment/icl", "movie-sentiment/knn"}


def test_to_pandas_columns_and_numbers_match_the_summary(run_dir: Path) -> None:
    run = load_run(run_dir)
    records = run.records.to_pandas()
    assert list(records.columns[:15]) == ["task", "method", "shots", "episode_id", "episode_hash", "query_id",
                                          "gold", "prediction", "correct", "scores", "probs", "prompt",
                                          "prompt_hash", "labels", "permutation"]
    assert {"label_mass", "meta_train", "n_meta_texts"} <= set(records.columns)
    assert len(records) == len(run.records) and records["correct"].dtype == bool
    summary = run.summary.to_pandas()
    assert list(summary.columns[:13]) == ["task", "method", "shots", "n_episodes", "accuracy", "ci_low", "ci_high",
                                          "macro_f1", "n_queries", "ece", "meta_train", "n_meta_texts", "prompt"]
    assert len(summary) == len(run.summary) == 4
    # accuracy recomputed from the records with pandas: the mean over episodes of the mean over prompts of the
    # episode's accuracy, as summary.json states it
    per_episode = (records.groupby(["method", "shots", "episode_hash", "prompt"], dropna=False)["correct"].mean()
                   .groupby(["method", "shots", "episode_hash"]).mean().groupby(["method", "shots"]).mean())
    for row in run.summary:
        assert per_episode[(row.method, row.shots)] == pytest.approx(row.accuracy, abs=5e-5)


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


def test_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(IclkitError) as e:
        load_run(tmp_path / "nope")
    assert e.value.file == str(tmp_path / "nope")


@pytest.mark.parametrize("name", ["records.jsonl", "summary.json", "manifest.json", "episodes.jsonl"])
def test_missing_file_is_named(run_dir: Path, tmp_path: Path, name: str) -> None:
    folder = _copy(run_dir, tmp_path)
    (folder / name).unlink()
    with pytest.raises(IclkitError) as e:
        load_run(folder)
    assert e.value.file == str(folder / name)


def test_corrupt_jsonl_line_names_file_and_line(run_dir: Path, tmp_path: Path) -> None:
    folder = _copy(run_dir, tmp_path)
    lines = (folder / "records.jsonl").read_text().splitlines()
    lines[4] = lines[4][: len(lines[4]) // 2]  # a line cut short, as by a full disk
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(IclkitError) as e:
        load_run(folder)
    assert (e.value.file, e.value.line) == (str(folder / "records.jsonl"), 5)
    assert "malformed JSON" in str(e.value) and "records.jsonl:5" in str(e.value)


@pytest.mark.parametrize(("field", "value", "message"), [("correct", "yes", "expected true or false"),
                                                         ("shots", 1.5, "expected an integer"),
                                                         ("episode_hash", None, "missing field")])
def test_wrong_or_missing_field_names_line_and_field(run_dir: Path, tmp_path: Path, field: str, value: object,
                                                     message: str) -> None:
    folder = _copy(run_dir, tmp_path)
    lines = _lines(folder / "records.jsonl")
    if value is None:
        del lines[2][field]
    else:
        lines[2][field] = value
    (folder / "records.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    with pytest.raises(IclkitError) as e:
        load_run(folder)
    assert (e.value.file, e.value.line, e.value.field) == (str(folder / "records.jsonl"), 3, field)
    assert message in str(e.value)


def test_bad_summary_row_names_the_row_and_field(run_dir: Path, tmp_path: Path) -> None:
    folder = _copy(run_dir, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    summary["results"][1]["accuracy"] = "high"
    (folder / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(IclkitError) as e:
        load_run(folder)
    assert (e.value.file, e.value.field) == (str(folder / "summary.json"), "results[1].accuracy")


def test_corrupt_episode_line_names_its_line(run_dir: Path, tmp_path: Path) -> None:
    folder = _copy(run_dir, tmp_path)
    lines = _lines(folder / "episodes.jsonl")
    del lines[1]["support"]
    (folder / "episodes.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    with pytest.raises(IclkitError) as e:
        load_run(folder)
    assert (e.value.file, e.value.line, e.value.field) == (str(folder / "episodes.jsonl"), 2, "support")
