"""`iclkit verify RUN`: a real small run re-scored under other settings verifies; an edited record or episode fails
naming it (exit 1); a folder that is not a run is bad input (exit 2, nothing written); the leaderboard shows it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from iclkit.cli import main
from iclkit.export.formats import render
from iclkit.export.leaderboard import build
from iclkit.results import read_records
from iclkit.types import Episode, Example
from iclkit.verify.certificate import verified_text
from iclkit.verify.compare import compare
from iclkit.verify.sample import declared_meta_learners, draw, rescorable
from iclkit.verify.settings import SETTINGS, cpu_cores, parse_settings, torch_threads

# two episodes (0 and 1 shot) of two queries: ICL on both, kNN on LM embeddings on the 1-shot one
RUN = ["run", "--task", "movie-sentiment", "--shots", "0,1", "--episodes", "1", "--n-query", "2",
       "--methods", "icl,knn", "--dtype", "float32", "--device", "cpu", "--no-progress"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A small real run, verified under every setting (module-wide: the other tests copy it). On one torch thread,
    restored afterwards: fast on a busy machine; the threads setting then re-scores on two."""
    folder = tmp_path_factory.mktemp("verify") / "small-run"
    with torch_threads(1):
        assert main([*RUN, "--out", str(folder)]) == 0
        assert main(["verify", str(folder)]) == 0
    return folder


def _copy(run_dir: Path, tmp_path: Path, name: str = "edited-run") -> Path:
    copy = tmp_path / name
    shutil.copytree(run_dir, copy)
    (copy / "verify.json").unlink()
    return copy


def test_a_small_real_run_verifies_under_every_setting(run_dir: Path) -> None:
    doc = json.loads((run_dir / "verify.json").read_text())
    n_records = len(read_records(run_dir / "records.jsonl"))
    assert doc["version"] == 1 and doc["passed"] is True
    assert doc["tolerance"] == 1e-4 and doc["tolerance_reason"] == "float32"
    assert doc["methods"] == {"rescored": ["icl", "knn"], "skipped": {}}
    assert doc["sample"]["episodes"] == {"movie-sentiment": ["movie-sentiment/k0/e0", "movie-sentiment/k1/e0"]}
    assert {h["manifest"] == h["file"] == h["redrawn"] for h in doc["episodes"]["tasks"].values()} == {True}
    by_name = {s["name"]: s for s in doc["settings"]}
    assert list(by_name) == list(SETTINGS)
    assert by_name["batch-size"]["batch_size"] == 1 and by_name["batch-size"]["lm"]["batch_size"] == 1
    assert by_name["no-score-cache"]["lm"]["batch_size"] == 16  # the run's own (automatic on CPU)
    assert by_name["threads"]["threads"] != by_name["no-score-cache"]["threads"]
    if cpu_cores() < 2:
        assert by_name.pop("processes")["status"] == "skipped"
    for s in by_name.values():
        assert s["status"] == "passed", s
        assert s["compared"] == s["identical"] == n_records  # every record of the sample, same prediction
        assert s["score_cache"] is False and 0 <= s["max_abs_delta"] <= doc["tolerance"]
        assert s["by_method"]["icl"]["compared"] == 4 and s["by_method"]["knn"]["compared"] == 2
    assert doc["summary"]["compared"] == doc["summary"]["identical"] == n_records * len(by_name)
    assert doc["versions"]["torch"] and doc["files"]["records.jsonl"]


def test_an_edited_prediction_fails_naming_the_record(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      one_torch_thread: None) -> None:
    run = _copy(run_dir, tmp_path)
    records = _lines(run / "records.jsonl")
    target = next(r for r in records if r["method"] == "icl" and r["shots"] == 1)
    target["prediction"] = next(label for label in target["scores"] if label != target["prediction"])
    _write(run / "records.jsonl", records)
    capsys.readouterr()
    assert main(["verify", str(run), "--settings", "no-score-cache"]) == 1
    out = capsys.readouterr().out
    named = [line for line in out.splitlines() if line.startswith("  ") and "field 'prediction'" in line]
    assert len(named) == 1
    assert all(part in named[0] for part in ("task movie-sentiment", "method icl", f"episode {target['episode_id']}",
                                             f"query {target['query_id']}"))
    doc = json.loads((run / "verify.json").read_text())
    (setting,) = doc["settings"]
    assert doc["passed"] is False and setting["mismatched_predictions"] == 1
    assert setting["identical"] == setting["compared"] - 1
    assert verified_text(doc).startswith("NOT verified: 1 difference")


def test_a_score_edited_beyond_the_tolerance_fails_naming_the_field(run_dir: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture,
                                                                    one_torch_thread: None) -> None:
    run = _copy(run_dir, tmp_path)
    records = _lines(run / "records.jsonl")
    target = next(r for r in records if r["method"] == "icl" and r["shots"] == 0)
    label = next(iter(target["scores"]))
    original = target["scores"][label]
    target["scores"][label] = round(original + 0.01, 6)  # 100 × the tolerance; the prediction stays
    _write(run / "records.jsonl", records)
    capsys.readouterr()
    assert main(["verify", str(run), "--settings", "no-score-cache"]) == 1
    out = capsys.readouterr().out
    assert f"query {target['query_id']}: field 'scores.{label}'" in out
    (diff,) = json.loads((run / "verify.json").read_text())["differences"]
    assert diff["episode_id"] == target["episode_id"] and diff["field"] == f"scores.{label}"
    assert diff["recorded"] - diff["found"] == pytest.approx(0.01, abs=2e-5)  # the edit, found again


def test_an_edited_episode_fails_on_its_hash_without_rescoring(run_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    run = _copy(run_dir, tmp_path)
    episodes = _lines(run / "episodes.jsonl")
    episodes[1]["query"][0]["fields"]["text"] += " (edited)"
    _write(run / "episodes.jsonl", episodes)
    capsys.readouterr()
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert f"episodes.jsonl:2, task movie-sentiment, episode {episodes[1]['id']}: field 'hash'" in out
    assert "manifest.json, task movie-sentiment: field 'episodes_hash'" in out
    doc = json.loads((run / "verify.json").read_text())
    assert doc["passed"] is False and {s["status"] for s in doc["settings"]} == {"not run"}


def test_a_folder_that_is_not_a_run_is_bad_input_and_writes_nothing(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("not a run\n")
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iclkit: error: ") and "manifest.json: missing file" in err
    assert not (tmp_path / "verify.json").exists()
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_a_malformed_record_is_bad_input_naming_its_line(run_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    run = _copy(run_dir, tmp_path)
    lines = (run / "records.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"prediction": ', '"prediction": 7, "was": ', 1)
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["verify", str(run)]) == 2
    assert "records.jsonl:3: field 'prediction': expected a string" in capsys.readouterr().err
    assert not (run / "verify.json").exists()


def test_the_leaderboard_shows_the_verification(run_dir: Path, tmp_path: Path) -> None:
    doc = json.loads((run_dir / "verify.json").read_text())
    line = verified_text(doc)
    n = doc["summary"]["compared"]
    assert line.startswith(f"verified: {doc['summary']['settings_run']} settings, {n}/{n} identical, max |Δ| ")
    unverified, stale = _copy(run_dir, tmp_path, "unverified-run"), _copy(run_dir, tmp_path, "stale-run")
    shutil.copy(run_dir / "verify.json", stale / "verify.json")
    with open(stale / "records.jsonl", "a", encoding="utf-8") as f:
        f.write("\n")  # any change to a verified file after verify.json voids it
    board = build([run_dir, unverified, stale])
    md = render(board, "md")
    assert f"- small-run (smollm2-135m-instruct, seed 0): {line}" in md.splitlines()
    assert "- unverified-run (smollm2-135m-instruct, seed 0): not verified" in md.splitlines()
    assert ("- stale-run (smollm2-135m-instruct, seed 0): not verified (verify.json is stale: records.jsonl changed "
            "since)") in md.splitlines()
    page = render(board, "html")
    assert f'<span class="pos verified">{line}</span>' in page
    assert '<span class="muted verified">not verified</span>' in page
    assert [r["verification"] and r["verification"]["passed"] for r in board.runs] == [True, None, False]


def test_the_sample_is_seeded_and_nested_in_the_run_order() -> None:
    def episode(i: int) -> Episode:
        return Episode("t", i, 1, 0, ("a", "b"), (Example(f"s{i}", {"text": "x"}, "a"),),
                       (Example(f"q{i}", {"text": "y"}, "b"),))

    eps = {"t": [episode(i) for i in range(10)]}
    a, b, c = draw(eps, 4, seed=3), draw(eps, 4, seed=3), draw(eps, 4, seed=4)
    assert a == b and a != c and len(a.episodes["t"]) == 4
    order = [e.id for e in eps["t"]]
    assert sorted(a.episodes["t"], key=order.index) == list(a.episodes["t"])
    assert draw(eps, 0, seed=3).episodes["t"] == draw(eps, 50, seed=3).episodes["t"] == tuple(order)


def test_verify_run_is_public_api() -> None:
    import iclkit
    from iclkit.verify.run import verify_run

    assert "verify_run" in iclkit.__all__ and iclkit.verify_run is verify_run


def test_learners_that_meta_train_are_left_out_with_the_reason() -> None:
    assert rescorable(("icl", "maml", "icl+contextual", "knn", "protonet-proj")) == \
        ("icl", "icl+contextual", "knn")
    assert set(declared_meta_learners(("icl", "maml", "knn"))) == {"maml"}


def test_threads_are_restored_and_settings_are_checked() -> None:
    import torch

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1 if before > 1 else 2):
            assert torch.get_num_threads() != before
            raise RuntimeError
    assert torch.get_num_threads() == before
    assert parse_settings("threads, batch-size") == ("batch-size", "threads")
    with pytest.raises(Exception, match="unknown setting"):
        parse_settings("gpu")


def test_compare_counts_against_hand_made_records() -> None:
    from iclkit.results import Record

    base = dict(task="t", method="icl", shots=1, episode_id="t/k1/e0", episode_hash="h", gold="a", correct=True)
    recorded = [Record(**base, query_id="q1", prediction="a", scores={"a": -1.0, "b": -2.0}),
                Record(**base, query_id="q2", prediction="a", scores={"a": -1.0, "b": -3.0}),
                Record(**{**base, "method": "protonet"}, query_id="q1", prediction="a",
                       scores={"a": -500.0, "b": -900.0})]
    fresh = [{**r.to_dict()} for r in recorded]
    fresh[0]["scores"] = {"a": -1.00002, "b": -2.0}  # |Δ| 2e-5: within 1e-4
    fresh[1]["prediction"], fresh[1]["scores"] = "b", {"a": -1.0, "b": -0.5}  # flipped: |Δ| 2.5
    fresh[2]["scores"] = {"a": -500.02, "b": -900.0}  # |Δ| 0.02 on a scale of 500: relative 4e-5
    c = compare(recorded, fresh, 1e-4, ["icl", "protonet"], lambda task, eid: True, own_scale={"protonet"})
    assert (c.compared, c.mismatched_predictions) == (3, 1)
    assert c.max_abs_delta == pytest.approx(2.5) and c.max_rel_delta == pytest.approx(4e-5)
    assert sorted(d.field for d in c.differences) == ["prediction", "scores.b"]
    assert compare(recorded, fresh[:2], 1e-4, ["icl", "protonet"], lambda task, eid: True,
                   own_scale={"protonet"}).differences[-1].field == "record"  # not re-scored
