"""Meta-training protocols on real data: class-split keeps meta-training and evaluation classes apart, cross-task never
trains on a text the evaluation can show nor on the evaluated task's corpus, in-task happens only when asked, and
every method's data budget is right (ICL 0; a meta-learner the pool it actually trained on, counted here by hand)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from iclkit import evaluate
from iclkit.cli import main
from iclkit.data.tasks import load_task
from iclkit.episodes import EpisodeConfig, read_episodes, sample_episodes
from iclkit.errors import IclkitError
from iclkit.export.formats import render
from iclkit.export.leaderboard import build
from iclkit.learners import MetaTrainOptions
from iclkit.metatrain import training_episodes
from iclkit.protocols import plan_for
from iclkit.types import episodes_hash

TINY = dict(n_query=3, n_episodes=2, embed="minilm", meta_episodes=16, meta_steps=3, meta_pool=16, progress=False)


def texts(examples):
    """Exact content and, independently of iclkit's own normalization, lower-cased alphanumerics only."""
    out = set()
    for e in examples:
        joined = " ".join(v for _, v in sorted(e.fields.items()))
        out |= {("exact", joined), ("normalized", re.sub(r"[^0-9a-z]", "", joined.lower()))}
    return out


def items(episodes):
    return [e for ep in episodes for e in (*ep.support, *ep.query)]


@pytest.fixture(scope="module")
def dbpedia(data_dir):
    return load_task("dbpedia")


def test_class_split_keeps_meta_training_and_evaluation_classes_apart_both_ways(dbpedia):
    options = MetaTrainOptions(meta_episodes=40, meta_pool=16)
    plan = plan_for(dbpedia, options, n_way=5, seed=0)  # auto: 14 classes → class-split
    assert plan is not None and plan.protocol == "class-split"
    held, train_classes = set(plan.eval_classes or ()), set(plan.train_classes)
    assert len(held) == 7 and held.isdisjoint(train_classes) and held | train_classes == set(dbpedia.labels)
    evaluation = sample_episodes(dbpedia, EpisodeConfig(shots=(1, 4), n_episodes=6, n_way=5, n_query=5),
                                 classes=plan.eval_classes)
    train = training_episodes(dbpedia, evaluation, options, 0, plan)
    assert len(train) == 40 and all(len(ep.labels) == 5 for ep in train)
    assert not any(set(ep.labels) & held for ep in train)  # no meta-training episode holds an evaluation class
    assert not any(e.label in held for e in items(train))
    assert not any(set(ep.labels) & train_classes for ep in evaluation)  # and no evaluation episode a training one
    assert not any(e.label in train_classes for e in items(evaluation))
    assert texts(items(train)).isdisjoint(texts(items(evaluation)))
    # the split is seeded: the same seed gives the same split, another seed (here) another one
    assert plan_for(dbpedia, options, n_way=5, seed=0) == plan
    assert plan_for(dbpedia, options, n_way=5, seed=1).eval_classes != plan.eval_classes


def test_cross_task_never_trains_on_an_evaluation_text_nor_on_the_corpus(data_dir):
    sst2 = load_task("sst2")
    plan = plan_for(sst2, MetaTrainOptions(), n_way=None, seed=0)  # auto: 2 classes → cross-task
    assert plan is not None and plan.protocol == "cross-task"
    assert {"sst5", "movie-sentiment", "sst2"}.isdisjoint(plan.sources)  # the same corpus is never a source
    assert {"agnews", "dbpedia", "trec"} <= set(plan.sources)
    assert set(plan.excluded) == {"sst5", "movie-sentiment"}
    # Named with the override, SST-2 is a source for movie-sentiment, whose 200 sentences come from the same reviews
    # (136 of them are SST-2 sentences up to tokenization); with every SST-2 text in the pool and 1,440 draws from it,
    # about 20 would be drawn without the ban. None is: not an evaluation text, nor any other movie-sentiment text.
    movie = load_task("movie-sentiment")
    options = MetaTrainOptions(meta_train_tasks=("sst2",), allow_same_corpus=True, meta_episodes=60,
                               meta_pool=5000)
    named = plan_for(movie, options, n_way=None, seed=0)
    assert named is not None and named.sources == ("sst2",)
    evaluation = sample_episodes(movie, EpisodeConfig(shots=(1, 4), n_episodes=8, n_query=8))
    train = training_episodes(movie, evaluation, options, 0, named)
    # one 2-class source: a quarter of each class's texts is held out for meta-validation
    assert {ep.task for ep in train} == {"sst2:metatrain", "sst2:metaval"}
    assert texts(items(train)).isdisjoint(texts(items(evaluation)))
    assert texts(items(train)).isdisjoint(texts([*movie.train, *movie.test]))


def test_in_task_is_today_s_protocol_only_when_asked(dbpedia, data_dir):
    sst2 = load_task("sst2")
    assert plan_for(sst2, MetaTrainOptions(), n_way=None, seed=0).protocol == "cross-task"
    assert plan_for(dbpedia, MetaTrainOptions(), n_way=None, seed=0).protocol == "class-split"
    asked = plan_for(sst2, MetaTrainOptions(meta_train="in-task"), n_way=None, seed=0)
    assert asked.protocol == "in-task" and asked.eval_classes is None and asked.sources == ("sst2",)
    evaluation = sample_episodes(sst2, EpisodeConfig(shots=(1,), n_episodes=3, n_query=4))
    options = MetaTrainOptions(meta_train="in-task", meta_episodes=10, meta_pool=16, meta_val_episodes=2)
    train = training_episodes(sst2, evaluation, options, 0, asked)
    # what in-task means, written out: only sst2's own train texts with their own labels, every class, no
    # evaluation query; a support text may come back (that protocol is not disjoint by construction)
    own = {(e.id, tuple(sorted(e.fields.items())), e.label) for e in sst2.train}
    used = items(train)
    assert len(train) == 10 and {ep.task for ep in train} <= {"sst2:metatrain", "sst2:metaval"}
    assert all((e.id, tuple(sorted(e.fields.items())), e.label) in own for e in used)
    assert {e.label for e in used} == set(sst2.labels)
    queries = {(tuple(sorted(q.fields.items()))) for ep in evaluation for q in ep.query}
    assert not queries & {tuple(sorted(e.fields.items())) for e in used}


def test_in_task_never_trains_on_an_evaluation_query():
    """A toy task whose evaluation queries are train texts: in-task meta-training draws from the rest only (its
    supports may come back), every other train text is used."""
    from iclkit.data.spec import TaskData, TaskSpec
    from iclkit.types import Episode, Example

    train = tuple(Example(f"{lab}{i}", {"text": f"text {lab} {i}"}, lab) for lab in "ab" for i in range(8))
    task = TaskData(TaskSpec(name="toy", type="classification", inputs=("text",), labels=("a", "b"), prompt="",
                             sources=()), train=train, test=(), source="test")
    query = tuple(e for e in train if e.id[1] in "123")
    evaluation = [Episode(task="toy", index=0, shots=1, seed=0, labels=("a", "b"), support=(train[0], train[8]),
                          query=query)]
    options = MetaTrainOptions(meta_train="in-task", meta_episodes=30, meta_pool=16, meta_query=2,
                               meta_val_episodes=0)
    used = {e.id for ep in training_episodes(task, evaluation, options, 0) for e in (*ep.support, *ep.query)}
    assert used == {e.id for e in train} - {q.id for q in query}


def test_sampling_from_all_classes_is_sampling_without_a_class_list(dbpedia):
    config = EpisodeConfig(shots=(1, 2), n_episodes=3, n_way=4, n_query=4)
    assert episodes_hash(sample_episodes(dbpedia, config, classes=dbpedia.labels)) == \
        episodes_hash(sample_episodes(dbpedia, config))


@pytest.fixture(scope="module")
def split_run(tmp_path_factory, data_dir):
    """DBpedia under the default protocol (a class-split): ICL, a plain ProtoNet and MAML on the same episodes."""
    out = tmp_path_factory.mktemp("protocols") / "dbpedia"
    evaluate("dbpedia", shots=(1,), n_way=3, methods=("icl", "protonet", "maml"), out=out, seed=4, **TINY)
    return out


def _summary(run: Path) -> list[dict]:
    return json.loads((run / "summary.json").read_text())["results"]


def test_every_method_is_evaluated_on_the_held_out_classes_only(split_run):
    manifest = json.loads((split_run / "manifest.json").read_text())
    plan = manifest["meta_training"]["dbpedia"]
    assert plan["protocol"] == "class-split"
    held = set(plan["eval_classes"])
    assert all(set(ep.labels) <= held for ep in read_episodes(split_run / "episodes.jsonl"))
    records = [json.loads(line) for line in (split_run / "records.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"icl", "protonet", "maml"}
    assert all(r["gold"] in held for r in records)
    maml = next(r for r in _summary(split_run) if r["method"] == "maml")
    assert maml["meta_train"] == "class-split" and maml["meta_tasks"] == ["dbpedia"]
    assert {c.split(":", 1)[1] for c in maml["meta_classes"]} == set(plan["train_classes"])


def test_budgets_are_zero_for_icl_and_the_pool_actually_used_for_a_meta_learner(split_run):
    manifest = json.loads((split_run / "manifest.json").read_text())
    rows = {r["method"]: r for r in _summary(split_run)}
    records = [json.loads(line) for line in (split_run / "records.jsonl").read_text().splitlines()]
    model = manifest["model"]["model"]
    assert (rows["icl"]["meta_train"], rows["icl"]["n_meta_texts"], rows["icl"]["pretrained"]) == ("none", 0, model)
    assert (rows["protonet"]["meta_train"], rows["protonet"]["n_meta_texts"]) == ("none", 0)  # trains on nothing
    # The meta-learner's episodes, drawn again from the run's own evaluation episodes; their hash is the run's.
    task = load_task("dbpedia")
    plan = plan_for(task, MetaTrainOptions(), n_way=3, seed=4)
    train = training_episodes(task, read_episodes(split_run / "episodes.jsonl"),
                              MetaTrainOptions(meta_episodes=16, meta_pool=16), 4, plan)
    assert episodes_hash(train) == manifest["meta_train_episodes_hash"]["dbpedia/maml"]
    pool = {(ep.task, tuple(sorted(e.fields.items())), e.label) for ep in train for e in (*ep.support, *ep.query)}
    assert 0 < rows["maml"]["n_meta_texts"] == len(pool)
    for r in records:
        expected = {"icl": ("none", 0), "protonet": ("none", 0), "maml": ("class-split", len(pool))}[r["method"]]
        assert (r["meta_train"], r["n_meta_texts"]) == expected
    board = build([split_run])
    assert {(r["method"], r["meta_train"], r["n_meta_texts"]) for r in board.rows} == \
        {("icl", "none", 0), ("protonet", "none", 0), ("maml", "class-split", len(pool))}
    comparison = json.loads((split_run / "comparison.json").read_text())["rows"]
    assert {(c["method"], c["n_meta_texts"]) for c in comparison} == {("protonet", 0), ("maml", len(pool))}


def test_in_task_is_named_in_the_summary_and_the_leaderboard(tmp_path, data_dir):
    runs = {}
    for protocol in ("auto", "in-task"):
        runs[protocol] = tmp_path / protocol
        evaluate("sst2", shots=(1,), methods=("protonet", "maml"), meta_train=protocol, out=runs[protocol],
                 reference="protonet", **TINY)
    default = {r["method"]: r for r in _summary(runs["auto"])}
    asked = {r["method"]: r for r in _summary(runs["in-task"])}
    assert default["maml"]["meta_train"] == "cross-task" and "sst2" not in default["maml"]["meta_tasks"]
    assert asked["maml"]["meta_train"] == "in-task" and asked["maml"]["meta_tasks"] == ["sst2"]
    board = build([runs["auto"], runs["in-task"]], reference="protonet")
    assert {(r["run"], r["method"], r["meta_train"]) for r in board.rows} == {
        ("auto", "maml", "cross-task"), ("auto", "protonet", "none"),
        ("in-task", "maml", "in-task"), ("in-task", "protonet", "none")}
    md = render(board, "md")
    assert "in-task (this task's classes)" in md and "cross-task" in md
    csv_rows = list(csv.DictReader(io.StringIO(render(board, "csv"))))
    assert [(r["run"], r["method"]) for r in csv_rows if r["meta_train"] == "in-task"] == [("in-task", "maml")]
    assert {r["meta_tasks"] for r in csv_rows if r["meta_train"] == "in-task"} == {"sst2"}
    assert "in-task (this task&#x27;s classes)" in render(board, "html")


def no_leftovers(out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("args,message", [
    (["--task", "trec", "--n-way", "4", "--meta-train", "class-split"], "class-split holds out 3"),
    (["--task", "sst2", "--meta-train", "class-split"], "class-split holds out 1"),
    (["--task", "sst2", "--meta-train", "sideways"], "must be one of auto, cross-task, class-split, in-task"),
    (["--task", "sst2", "--meta-train-tasks", "agnews,sst5"], "shares the corpus 'rotten-tomatoes'"),
    (["--task", "sst5", "--meta-train-tasks", "movie-sentiment"], "--allow-same-corpus"),
    (["--task", "sst2", "--meta-train", "in-task", "--meta-train-tasks", "agnews"], "cannot go with"),
])
def test_bad_protocols_exit_2_and_leave_no_output_folder(tmp_path, capsys, data_dir, args, message):
    out = tmp_path / "out"
    code = main(["run", "--no-progress", "--methods", "maml", "--embed", "minilm", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert no_leftovers(out)


def test_the_same_corpus_is_allowed_when_asked(dbpedia, data_dir):
    sst2 = load_task("sst2")
    with pytest.raises(IclkitError, match="shares the corpus") as e:
        plan_for(sst2, MetaTrainOptions(meta_train_tasks=("sst5",)), n_way=None, seed=0)
    assert e.value.field == "meta_train_tasks" and "--allow-same-corpus" in (e.value.hint or "")
    allowed = plan_for(sst2, MetaTrainOptions(meta_train_tasks=("sst5",), allow_same_corpus=True), None, 0)
    assert allowed is not None and allowed.sources == ("sst5",)


def test_cross_task_without_a_source_of_enough_classes_fails_before_any_work(dbpedia):
    with pytest.raises(IclkitError, match="needs a source task with at least 14 classes") as e:
        plan_for(dbpedia, MetaTrainOptions(meta_train="cross-task"), n_way=None, seed=0)  # DBpedia is the only one
    assert e.value.field == "n_way"
    plan = plan_for(dbpedia, MetaTrainOptions(meta_train="cross-task"), n_way=5, seed=0)
    assert plan is not None and {"trec", "sst5"} <= set(plan.sources)


def test_cross_task_without_any_source_data_says_so(tmp_path, monkeypatch, capsys):
    """Offline and without the benchmark data folder, no source task loads: one clear error, not a crash later."""
    from iclkit.cli import main

    monkeypatch.setenv("ICLKIT_DATA_DIR", str(tmp_path / "no-data"))
    out = tmp_path / "run"
    assert main(["run", "--task", "movie-sentiment", "--shots", "1", "--episodes", "1", "--n-query", "2",
                 "--methods", "maml", "--embed", "minilm", "--meta-episodes", "10", "--no-progress",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--meta-train cross-task" in err and "has data here" in err and "ICLKIT_DATA_DIR" in err
    assert not out.exists()


def test_a_run_that_cannot_be_served_fails_before_any_model_is_loaded(tmp_path, monkeypatch, capsys):
    """The default command asked for cross-task, with no data folder: the sources are resolved when the run is
    planned, so it fails at once, naming the option, with no model loaded and nothing written."""
    import iclkit.runner.model as model
    from iclkit.cli import main

    def no_model(spec):
        raise AssertionError("the model was loaded before the meta-training sources were resolved")

    monkeypatch.setattr(model, "load_lm", no_model)
    monkeypatch.setenv("ICLKIT_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--meta-train", "cross-task", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "field 'meta_train'" in err and "--meta-train cross-task" in err and "self-supervised" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no no-data/, no runs/, no checkpoint


def test_plain_protonet_needs_no_meta_training_source(tmp_path, monkeypatch):
    """ProtoNet without a projection learns nothing from meta-training, so it runs where no source can be loaded
    (the README's offline fallback, --methods icl,protonet,knn,linear) and reports no meta-training data."""
    monkeypatch.setenv("ICLKIT_DATA_DIR", str(tmp_path / "no-data"))
    result = evaluate("movie-sentiment", shots=[1], methods=["protonet", "knn"], meta_train="cross-task", **TINY)
    assert {r.method for r in result.results} == {"protonet", "knn"}
    assert result.budgets[("movie-sentiment", "protonet")]["meta_train"] == "none"
    assert result.manifest["meta_train_episodes_hash"] == {}
