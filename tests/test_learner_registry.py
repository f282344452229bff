"""Learners are an extension point: one file and one registration line add a method to `iclkit run`; their options
are typed, with one default each, shared by the Python class, the API and the CLI."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, replace

import pytest

from iclkit import learners
from iclkit.baselines.knn import KNN
from iclkit.baselines.maml import MAML, OPTIONS as MAML_OPTIONS
from iclkit.baselines.protonet import PROJECTED, ProtoNet
from iclkit.cli import main
from iclkit.errors import IclkitError
from iclkit.learners.base import classification_prediction
from iclkit.learners.options import OptionSpec
from iclkit.runner.config import RunConfig
from iclkit.runner.pipeline import evaluate


# --- a whole learner, as a user would write it in one file -------------------------------------------------------
@dataclass(frozen=True)
class MostRecentLabel:
    """Predicts the label of the last demonstration for every query (a pure recency bias)."""

    name: str = "most-recent"

    def describe(self):
        return {"method": self.name, "backbone": "none (support labels only)"}

    def adapt(self, support, labels):
        return _Adapted(support[-1].label, tuple(labels))


@dataclass(frozen=True)
class _Adapted:
    label: str
    labels: tuple[str, ...]

    def predict(self, queries):
        return [classification_prediction(q, self.labels, {lab: float(lab == self.label) for lab in self.labels})
                for q in queries]


@pytest.fixture
def most_recent():
    learners.register("most-recent")(lambda ctx: MostRecentLabel())  # the one registration line
    yield
    learners.unregister("most-recent")


def test_a_registered_learner_runs_through_the_cli(most_recent, tmp_path, data_dir):
    out = tmp_path / "run"
    assert main(["run", "--task", "sst2", "--shots", "0,1,2", "--episodes", "3", "--n-query", "4",
                 "--methods", "most-recent", "--no-progress", "--out", str(out)]) == 0
    episodes = {json.loads(line)["hash"]: json.loads(line) for line in (out / "episodes.jsonl").open()}
    records = [json.loads(line) for line in (out / "records.jsonl").open()]
    assert {r["shots"] for r in records} == {1, 2}  # min_shots=1 by default: no 0-shot episodes
    assert len(records) == 2 * 3 * 4
    for r in records:  # independent reference: the last demonstration's label, read from episodes.jsonl
        assert r["method"] == "most-recent"
        assert r["prediction"] == episodes[r["episode_hash"]]["support"][-1]["label"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods"]["sst2/most-recent"]["backbone"] == "none (support labels only)"


def test_unknown_method_and_option_fail_with_the_valid_names(tmp_path, capsys):
    assert main(["run", "--task", "sst2", "--methods", "knn,nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["run", "--task", "sst2", "--set", "knn_kk=3", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'knn_kk'" in err and "did you mean knn_k" in err
    assert main(["run", "--task", "sst2", "--set", "knn_k=three", "--out", str(tmp_path / "c")]) == 2
    assert "field 'knn_k': expected int" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written for bad input
    with pytest.raises(IclkitError, match="unknown option 'normalise'"):
        evaluate("sst2", methods=["icl"], normalise="mean")


def test_config_file_keys_are_checked_with_the_file_named(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("task: sst2\nknn_k: 3\nmaml_inner_lrr: 0.1\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "maml_inner_lrr" in err and "maml_inner_lr" in err


def test_defaults_are_written_once():
    assert RunConfig.from_options({}) == RunConfig()
    signature = inspect.signature(evaluate).parameters
    config = RunConfig()
    assert signature["tasks"].default == config.tasks and signature["methods"].default == config.methods
    assert signature["shots"].default == config.episodes.shots
    assert signature["n_episodes"].default == config.episodes.n_episodes
    assert signature["n_query"].default == config.episodes.n_query
    # a learner's option defaults are its class's field defaults
    spec = OptionSpec(KNN, ("k", "mode", "temperature"), prefix="knn")
    assert spec.resolve({}) == {}  # nothing given: the class decides
    assert spec.resolve({"knn_k": "1", "knn_mode": "softmax"}) == {"k": 1, "mode": "softmax"}
    with pytest.raises(IclkitError, match="one of vote, softmax"):
        spec.resolve({"knn_mode": "majority"})


def test_outer_loop_options_fall_back_to_run_wide_then_to_the_learner():
    assert MAML_OPTIONS.resolve({})["loop"] == MAML.loop
    assert MAML_OPTIONS.resolve({"meta_steps": 7})["loop"].steps == 7
    loop = MAML_OPTIONS.resolve({"meta_steps": 7, "maml_steps": "3", "maml_lr": 0.5})["loop"]
    assert (loop.steps, loop.lr, loop.meta_batch, loop.cosine) == (3, 0.5, MAML.loop.meta_batch, MAML.loop.cosine)
    assert PROJECTED.resolve({"protonet_steps": 16, "protonet_metric": "cosine"}) == {
        "metric": "cosine", "loop": replace(ProtoNet.loop, steps=16)}
    assert set(learners.option_names()) >= {"knn_k", "maml_inner_lr", "normalize", "embed", "meta_steps",
                                              "protonet_steps", "mann_steps", "transformer_layers"}
