"""The README's first command, `iclkit run` with no arguments, where a new user may be: no benchmark data folder and
no hub. It completes, and shows ICL beside every baseline on the same episodes, its meta-learners trained on the
offline Lee corpus. Only the episode count is cut, to keep the suite short; its wall time and peak memory are
measured by benchmarks/default_run.sh, not here."""

from __future__ import annotations

import json

from iclkit.cli import main
from iclkit.runner.config import (DEFAULT_METHODS, DEFAULT_RUN_BUDGET, DEFAULT_RUN_PROTOCOL, DEFAULT_TASKS,
                                  RunConfig)

N_EPISODES = 2  # the default run's 12, cut for the suite: every other setting is the default command's


def test_the_default_configuration_meta_trains_on_the_lee_corpus_unless_a_protocol_is_named():
    assert dict(RunConfig.from_options({}).options) == {**DEFAULT_RUN_PROTOCOL, **DEFAULT_RUN_BUDGET}
    assert dict(RunConfig.from_options({"meta_steps": 5}).options) == {**DEFAULT_RUN_PROTOCOL,
                                                                       **DEFAULT_RUN_BUDGET, "meta_steps": 5}
    # a protocol named, or other tasks: the ordinary defaults (auto, MetaTrainOptions' budget)
    assert dict(RunConfig.from_options({"meta_train": "cross-task"}).options) == {"meta_train": "cross-task"}
    assert dict(RunConfig.from_options({"task": "sst2"}).options) == {}


def test_the_default_command_completes_offline_without_a_data_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ICLKIT_DATA_DIR", str(tmp_path / "no-data"))  # unset, ../shared/data would be found
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["run", "--episodes", str(N_EPISODES), "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    manifest = json.loads((out / "manifest.json").read_text())
    assert tuple(manifest["config"]["tasks"]) == DEFAULT_TASKS
    assert tuple(manifest["config"]["methods"]) == DEFAULT_METHODS
    assert manifest["config"]["options"]["meta_train"] == "self-supervised"
    assert manifest["meta_training"]["movie-sentiment"]["sources"] == ["lee-news"]

    records = [json.loads(line) for line in (out / "records.jsonl").open()]
    sentiment = [r for r in records if r["task"] == "movie-sentiment"]
    assert {r["method"] for r in sentiment} == set(DEFAULT_METHODS)
    # Every method on the same episodes: per episode with demonstrations, one hash and every method's records of
    # the same queries.
    episodes = {(r["episode_id"], r["episode_hash"]) for r in sentiment}
    assert len({e for e, _ in episodes}) == len(episodes) == 3 * N_EPISODES  # 0, 1 and 4 shots
    for episode_id, _ in episodes:
        mine = [r for r in sentiment if r["episode_id"] == episode_id]
        queries = {m: sorted(r["query_id"] for r in mine if r["method"] == m) for m in {r["method"] for r in mine}}
        expected = {"icl"} if mine[0]["shots"] == 0 else set(DEFAULT_METHODS)  # baselines need a demonstration
        assert set(queries) == expected and len({tuple(q) for q in queries.values()}) == 1
    for method in ("maml", "fomaml", "mann", "transformer"):  # what they meta-trained on, in every record
        assert {(r["meta_train"], r["n_meta_texts"] > 0) for r in sentiment if r["method"] == method} == \
            {("self-supervised", True)}
    assert {r["meta_train"] for r in sentiment if r["method"] in ("icl", "protonet", "knn", "linear")} == {"none"}
    assert {r["task"] for r in records} == set(DEFAULT_TASKS)  # the word-relation tasks: ICL
    assert "self-supervised" in printed and "from lee-news" in printed  # the run names what it used
