"""``iclkit run --dry-run``: its counts are the run's, checked against what the model's forward passes received;
nothing is scored into the run and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest

import iclkit.runner.model
from iclkit.cli import main
from iclkit.runner.config import RunConfig
from iclkit.runner.dryrun import dry_run
from iclkit.runner.pipeline import run
from iclkit.runner.usage import Usage

# calibration adds requests with other prefixes (DC-PMI's premise) and shared ones (contextual's content-free
# inputs); the task's three prompts and the unrelated-label probe add learners
CONFIG = {"tasks": "sst2", "methods": "icl", "calibration": "none,contextual,dcpmi", "shots": "0,2", "episodes": 2,
          "n_query": 3, "labels": "gold,unrelated", "seed": 4, "episode_batch": 1}
GENERATION = {"tasks": "past-tense", "methods": "icl", "shots": "0,2", "episodes": 2, "n_query": 3, "seed": 4}
# the CPU default, several episodes per LM call: requests identical across a call's episodes are scored once
SEVERAL = {k: v for k, v in CONFIG.items() if k != "episode_batch"}


@pytest.fixture
def model_is(monkeypatch):
    def use(lm: Any) -> None:
        monkeypatch.setattr(iclkit.runner.model, "load_lm", lambda spec: lm)
    return use


class ForwardTokens:
    """Counts the tokens a torch model's forward passes run (input positions the attention mask keeps): an
    account of the work independent of how iclkit plans it."""

    def __init__(self, model: Any):
        self.tokens = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs["input_ids"]
        mask = kwargs.get("attention_mask")
        self.tokens += int(mask[:, -ids.shape[1]:].sum()) if mask is not None else ids.numel()

    def close(self) -> None:
        self.handle.remove()


def _usage_of(manifest: dict[str, Any]) -> dict[str, Usage]:
    rows = manifest["lm_usage"]["jobs"]
    return {"/".join([r["task"], r["method"], *([r["prompt"]] if "prompt" in r else [])]): Usage.from_dict(r)
            for r in rows}


@pytest.mark.parametrize("given", [CONFIG, SEVERAL, GENERATION], ids=["scoring", "several-per-call", "generation"])
def test_dry_run_counts_are_the_counts_the_run_reports(given, smol, data_dir, model_is):
    model_is(smol)
    config = RunConfig.from_options(given)
    dry = dry_run(config, measure=False)
    real = run(config, progress=False)
    assert dry.usage() == _usage_of(real.manifest)
    assert real.manifest["lm_usage"]["total"] == sum(dry.usage().values(), Usage()).to_dict()
    if given is CONFIG:
        assert set(dry.usage()) == {"sst2/icl/sentiment", "sst2/icl/sentiment-opinion", "sst2/icl/sentiment-question"}
        used = dry.usage()["sst2/icl/sentiment"]
        # per episode run: 3 queries × 2 labels, 3 content-free inputs × 2 labels per prompt prefix, 2 for DC-PMI
        assert used.requests == 2 * 4 * (3 * 2 + 3 * 2 + 2) and used.calls == 2 * 4 and used.generations == 0
    elif given is SEVERAL:  # 4 episode runs per call; DC-PMI's premise request is the same in all of them
        used = dry.usage()["sst2/icl/sentiment"]
        assert used.calls == 2 and used.requests < 2 * 4 * (3 * 2 + 3 * 2 + 2)
    else:
        used = dry.usage()["past-tense/icl/past"]
        assert used.generations == 4 * 3 and used.requests == 0 and used.generation_tokens > 0
    # each row's episode runs and queries are the plan's: every output of a row predicts each of its queries once
    for j in dry.jobs:
        done = [r for r in real.results if r.task == j.task and r.method == j.method
                and r.info.get("prompt") == j.prompt]
        assert len(done) == j.runs and sum(len(r.predictions) for r in done) == j.queries


def test_tokens_counted_are_the_tokens_the_model_runs(smol, data_dir, model_is):
    """Prefix-shared and full-sequence scoring, each checked against the positions its forward passes ran."""
    from iclkit.lm.hf import HFCausalLM

    config = RunConfig.from_options({**CONFIG, "tasks": "sst2", "prompt": "sentiment"})
    full = HFCausalLM(smol.model, smol.tokenizer, share_prefix=False, info=smol.info, batch_size=16)
    for lm, field in ((smol, "tokens"), (full, "full_tokens")):
        model_is(lm)
        predicted = dry_run(config, measure=False)
        counter = ForwardTokens(smol.model)
        try:
            real = run(config, progress=False)
        finally:
            counter.close()
        assert predicted.usage() == _usage_of(real.manifest)
        assert getattr(sum(predicted.usage().values(), Usage()), field) == counter.tokens > 0
    assert smol.scoring_path == "prefix-shared" and full.scoring_path == "full-sequence"


def test_the_cli_dry_run_prints_the_plan_and_writes_nothing(smol, data_dir, model_is, tmp_path, monkeypatch, capsys):
    model_is(smol)
    monkeypatch.chdir(tmp_path)
    out, cache = tmp_path / "out", tmp_path / "scores.sqlite"
    assert main(["run", "--task", "sst2", "--methods", "icl,knn", "--prompt", "sentiment", "--shots", "0,1",
                 "--episodes", "2", "--n-query", "2", "--no-progress", "--dry-run", "--out", str(out),
                 "--score-cache", str(cache)]) == 0
    text = capsys.readouterr().out
    assert "nothing was scored and nothing written" in text
    assert "| sst2 | icl | sentiment | 4 | 4 | 8 | 1 | 16 |" in text  # 4 episodes in 1 call, 8 queries × 2 labels
    assert "| sst2 | knn | – | 2 | 2 | 4 | 0 | 0 |" in text
    assert "Estimated wall time (an estimate" in text and "tokens scored/s" in text
    assert "Texts to embed (smollm2-135m-instruct layer -1 mean): 8 distinct" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, checkpoint, runs/ or score cache
