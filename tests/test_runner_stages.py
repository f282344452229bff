"""The runner's three stages: plan → execute → collect is ``run``, and planning does no LM work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import iclkit.runner.model
from iclkit.runner.collect import collect, save
from iclkit.runner.config import RunConfig
from iclkit.runner.execute import execute
from iclkit.runner.pipeline import run
from iclkit.runner.plan import RunPlan, plan

# two prompts, a probe and two orders, a calibrated variant and a baseline: every kind of job the plan lists
SMALL = {"task": "sst2", "methods": "icl,knn", "calibration": "none,dcpmi", "prompt": "sentiment,sentiment-opinion",
         "shots": "0,1", "episodes": 2, "n_query": 2, "labels": "gold,random", "orders": 2, "seed": 3,
         "dtype": "float32", "device": "cpu"}


class NoScoring:
    """The session's model with everything but tokenization refused: planning may size prompts (``--shots auto``),
    never score, generate or embed."""

    ALLOWED = ("tokenize", "token_counts", "lead", "context_length", "apply_chat_template", "describe", "device")

    def __init__(self, lm: Any):
        self.lm = lm
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "lm" not in self.__dict__:
            raise AttributeError(name)
        if name not in self.ALLOWED:
            raise AssertionError(f"planning called the model's {name}")
        self.used.add(name)
        return getattr(self.lm, name)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model_is(monkeypatch):
    """Make every run of the test load ``lm`` instead of the model its config names."""
    def use(lm: Any) -> None:
        monkeypatch.setattr(iclkit.runner.model, "load_lm", lambda spec: lm)
    return use


def test_plan_then_execute_then_collect_is_run(smol, data_dir, model_is, tmp_path):
    model_is(smol)
    config = RunConfig.from_options(SMALL)
    whole = run(config, tmp_path / "whole", progress=False)
    planned = plan(config)
    staged = collect(planned, execute(planned, progress=False))
    save(staged, tmp_path / "staged")
    assert _files(tmp_path / "staged") == _files(tmp_path / "whole")
    assert staged.records() == whole.records() and staged.manifest == whole.manifest
    assert staged.summary == whole.summary and staged.comparison == whole.comparison


def test_the_plan_lists_every_job_with_its_episodes_and_loads_no_model(data_dir, model_is):
    def no_model(spec):
        raise AssertionError("planning loaded the model")

    model_is(no_model)
    planned = plan(RunConfig.from_options(SMALL))
    assert isinstance(planned, RunPlan) and not planned.model.loaded
    eps = planned.episodes["sst2"]
    assert sorted(e.shots for e in eps) == [0, 0, 1, 1]
    one_shot = [e for e in eps if e.shots == 1]
    # task × method × prompt × probe × order: ICL (order-sensitive, prompted) 2 prompts × 2 probes × 2 orders;
    # kNN (one shot and up, no prompt, order-invariant) 2 probes × 1 order
    keys = [(j.method, j.prompt, j.labels, j.permutation) for j in planned.jobs]
    assert keys == [("icl", p, kind, order) for p in ("sentiment", "sentiment-opinion")
                    for kind in ("gold", "random") for order in (0, 1)] + [("knn", None, "gold", 0),
                                                                           ("knn", None, "random", 0)]
    icl_gold = planned.jobs[0]
    assert icl_gold.episodes == eps and icl_gold.queries == 4 * 2
    assert planned.learners[icl_gold.learner].outputs == ("icl", "icl+dcpmi")
    assert icl_gold.info == {"prompt": "sentiment", "prompt_hash": planned.prompts["sst2"][0].hash, "labels": "gold",
                             "permutation": 0}
    random = next(j for j in planned.jobs if j.labels == "random" and j.method == "knn")
    assert [e.id for e in random.episodes] == [e.id for e in one_shot]
    assert [e.support for e in random.episodes] == [planned.probed["sst2"][e.id]["random"].episode.support
                                                    for e in one_shot]
    # the second order permutes each episode's demonstrations: a 0-shot episode has one order only
    second = planned.jobs[1]
    assert [e.id for e in second.episodes] == [e.id for e in one_shot]
    assert all(sorted(x.id for x in a.support) == sorted(x.id for x in b.support) and a.support != b.support
               for a, b in zip(second.episodes, one_shot))


def test_shots_auto_plans_with_the_tokenizer_alone(smol, data_dir, model_is):
    guard = NoScoring(smol)
    model_is(guard)
    planned = plan(RunConfig.from_options({**SMALL, "shots": "0,max", "context_length": 160, "labels": "gold",
                                           "orders": 1}))
    assert planned.model.loaded and guard.used <= set(NoScoring.ALLOWED) and "token_counts" in guard.used
    assert planned.shot_plans["sst2"].max_shots >= 1
    assert {e.shots for e in planned.episodes["sst2"]} == {0, planned.shot_plans["sst2"].max_shots}
