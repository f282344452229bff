"""Template spread: a task's several prompts, each on the same episodes; the summary's mean and spread across
prompts recomputed from the records; the per-prompt breakdown, pairing, leaderboard and plots."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

import iclkit
import iclkit.runner.model
from iclkit.analysis.paired import compare
from iclkit.data.tasks import read_spec, registry
from iclkit.errors import IclkitError
from iclkit.export.formats import render
from iclkit.export.json_export import schema
from iclkit.export.leaderboard import build
from iclkit.prompts import load_prompt
from iclkit.runner.checkpoint import Checkpoint

REPO = Path(__file__).resolve().parent.parent
# The domain premise DC-PMI uses for each shipped prompt of the template-spread tasks (docs/fair-icl.md).
PREMISES = {
    "sentiment": "Sentiment:", "sentiment-opinion": "Opinion:",
    "sentiment-question": "Question: Is this review positive?\nAnswer:",
    "agnews": "Topic:", "agnews-section": "Section:",
    "agnews-question": "Question: Which part of the newspaper is this article from?\nAnswer:",
    "trec": "Answer type:", "trec-category": "Category:", "trec-expects": "The answer to this question is a",
}


@pytest.mark.parametrize("task", ["sst2", "agnews", "trec"])
def test_shipped_tasks_name_three_prompts_that_differ_in_wording_cue_and_words(task: str):
    spec = read_spec(registry()[task])
    assert len(spec.prompts) >= 3 and spec.prompt == spec.prompts[0]
    prompts = [load_prompt(name) for name in spec.prompts]
    for p in prompts:
        p.check(spec.inputs, spec.labels)
        assert p.premise() == PREMISES[p.name]
    assert len({p.template for p in prompts}) == len({p.answer_cue for p in prompts}) == len(prompts)
    assert len({tuple(p.word(lab) for lab in spec.labels) for p in prompts}) == len(prompts)


def test_docs_document_each_premise():
    page = (REPO / "docs" / "fair-icl.md").read_text(encoding="utf-8")
    for name, premise in PREMISES.items():
        assert f"`{name}`" in page and premise.replace("\n", "\\n") in page, name


def test_answer_cue_and_domain_premise(tmp_path: Path):
    p = tmp_path / "p.yaml"
    p.write_text('template: "{premise}\\nQ: {hypothesis}\\n  Answer:"\n')
    assert load_prompt(p).answer_cue == "Answer:" and load_prompt(p).premise() == "Answer:"
    p.write_text('template: "Text: {text}"\ndomain_premise: "The topic is"\n')
    prompt = load_prompt(p)
    assert prompt.answer_cue == "" and prompt.premise() == "The topic is"
    p.write_text('template: "Text: {text}"\ndomain_premise: "  "\n')
    with pytest.raises(IclkitError) as e:
        load_prompt(p)
    assert e.value.field == "domain_premise" and e.value.file == str(p)


@pytest.mark.parametrize("body,field", [
    ("prompts: sentiment\n", "prompts"),
    ("prompts: [sentiment, sentiment]\n", "prompts"),
    ("prompts: [sentiment, '']\n", "prompts"),
    ("content_free: []\n", "content_free"),
    ("content_free: N/A\n", "content_free"),
    ("content_free: ['N/A', 3]\n", "content_free"),
])
def test_bad_prompt_lists_and_content_free_inputs(tmp_path: Path, body: str, field: str):
    (tmp_path / "t.yaml").write_text("name: t\nlabels: [a, b]\nsource: {kind: local, train: x.jsonl}\n" + body)
    with pytest.raises(IclkitError) as e:
        read_spec(tmp_path / "t.yaml")
    assert e.value.field == field and e.value.file == str(tmp_path / "t.yaml")


def test_content_free_inputs_are_read_as_written(tmp_path: Path):
    (tmp_path / "t.yaml").write_text("name: t\nlabels: [a, b]\nsource: {kind: local, train: x.jsonl}\n"
                                     "content_free: ['', 'N/A', 'nothing']\nprompts: [sentiment, p.yaml]\n")
    spec = read_spec(tmp_path / "t.yaml")
    assert spec.content_free == ("", "N/A", "nothing") and spec.prompt == "sentiment"
    assert spec.prompts == ("sentiment", str(tmp_path / "p.yaml"))


@pytest.fixture(scope="module")
def spread_run(smol, tmp_path_factory):
    original = iclkit.runner.model.load_lm
    iclkit.runner.model.load_lm = lambda spec: smol
    try:
        out = tmp_path_factory.mktemp("spread") / "run"
        result = iclkit.evaluate("movie-sentiment", shots=(0, 1), n_episodes=3, n_query=4, seed=5, methods=["icl"],
                                 calibration="none,batch", prompt="sentiment,sentiment-opinion,sentiment-question",
                                 progress=False, out=out)
    finally:
        iclkit.runner.model.load_lm = original
    return out, result


def test_each_prompt_runs_on_the_same_episodes_and_records_say_which(spread_run):
    out, _ = spread_run
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    hashes = {p.name: p.hash for p in map(load_prompt, ("sentiment", "sentiment-opinion", "sentiment-question"))}
    assert {(r["prompt"], r["prompt_hash"]) for r in records} == set(hashes.items())
    episodes = defaultdict(set)
    for r in records:
        episodes[(r["method"], r["prompt"])].add(r["episode_hash"])
    assert len(set(map(frozenset, episodes.values()))) == 1 and len(next(iter(episodes.values()))) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["name"] for p in manifest["prompts"]["movie-sentiment"]] == list(hashes)
    assert [p["hash"] for p in manifest["methods"]["movie-sentiment/icl"]["prompts"]] == list(hashes.values())
    assert {p.name for p in (out / "plots").iterdir()} >= {"template_spread_movie-sentiment.png",
                                                          "template_spread_movie-sentiment.svg"}


def test_summary_mean_and_spread_follow_from_the_records(spread_run):
    out, result = spread_run
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["results"]:
        mine = [r for r in records if r["method"] == row["method"] and r["shots"] == row["shots"]]
        by = defaultdict(list)  # (prompt, episode) → correctness
        for r in mine:
            by[(r["prompt"], r["episode_hash"])].append(r["correct"])
        acc = {k: sum(v) / len(v) for k, v in by.items()}
        prompts = sorted({p for p, _ in acc})
        eps = sorted({e for _, e in acc})
        per_episode = [statistics.mean(acc[(p, e)] for p in prompts) for e in eps]
        per_prompt = [statistics.mean(acc[(p, e)] for e in eps) for p in prompts]
        assert row["n_episodes"] == 3 and row["n_queries"] == 12 and row["n_prompts"] == 3
        assert row["accuracy"] == pytest.approx(statistics.mean(per_episode), abs=1e-4)
        assert row["prompt_min"] == pytest.approx(min(per_prompt), abs=1e-4)
        assert row["prompt_max"] == pytest.approx(max(per_prompt), abs=1e-4)
        assert row["prompt_std"] == pytest.approx(statistics.stdev(per_prompt), abs=1e-4)
        breakdown = {r["prompt"]: r for r in summary["prompts"]
                     if r["method"] == row["method"] and r["shots"] == row["shots"]}
        assert [breakdown[p]["accuracy"] for p in prompts] == pytest.approx(per_prompt, abs=1e-4)
        # the paired comparison pairs each episode's mean over prompts
        if row["method"] == "icl+batch":
            raw = {}
            for r in records:
                if r["method"] == "icl" and r["shots"] == row["shots"]:
                    raw.setdefault(r["episode_hash"], []).append(r["correct"])
            diff = statistics.mean(per_episode) - statistics.mean(sum(v) / len(v) for v in raw.values())
            c = next(c for c in compare(result.results) if c["method"] == "icl+batch" and c["shots"] == row["shots"])
            assert c["n_episodes"] == 3 and c["difference"] == pytest.approx(diff, abs=1e-4)


def test_leaderboard_shows_the_spread(spread_run):
    out, _ = spread_run
    board = build([out])
    jsonschema.validate(board.to_dict(), schema())
    assert all(r["n_prompts"] == 3 for r in board.rows) and len(board.prompts) == 2 * 2 * 3
    assert {c["method"] for c in board.calibration} == {"icl+batch"} and all(c["transductive"]
                                                                           for c in board.calibration)
    md = render(board, "md")
    assert "across prompts: min–max (sd)" in md and "3 prompts)" in md and "icl+batch (transductive)" in md
    assert render(board, "csv").splitlines()[0].endswith("n_prompts,prompt_min,prompt_max,prompt_std")


def test_a_task_runs_all_its_prompts_unless_told(smol, data_dir, monkeypatch):
    monkeypatch.setattr(iclkit.runner.model, "load_lm", lambda spec: smol)
    small = dict(shots=(0,), n_episodes=1, n_query=2, methods=["icl"], progress=False)
    every = iclkit.evaluate("sst2", **small)
    assert [p["name"] for p in every.manifest["prompts"]["sst2"]] == list(read_spec(registry()["sst2"]).prompts)
    assert {r.info["prompt"] for r in every.results} == {"sentiment", "sentiment-opinion", "sentiment-question"}
    one = iclkit.evaluate("sst2", prompt="sentiment-opinion", **small)
    assert {r.info["prompt"] for r in one.results} == {"sentiment-opinion"} and "n_prompts" not in one.summary[0]


def test_checkpoint_tells_prompts_apart(tmp_path: Path, spread_run):
    _, result = spread_run
    ckpt = Checkpoint(tmp_path / "out", "k")
    a, b = [r for r in result.results if r.method == "icl" and r.episode_id == result.results[0].episode_id][:2]
    ckpt.append(a)
    ckpt.append(b)
    again = Checkpoint(tmp_path / "out", "k")
    assert len(again.done) == 2 and a.info != b.info
