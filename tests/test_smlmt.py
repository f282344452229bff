"""Self-supervised meta-training (SMLMT, Bansal et al. 2020) on real text: sentences split and words masked as a
hand-written reference does it, every masked word gone from its sentences, balanced meta-training episodes that
never hold an evaluation text (checked on the unmasked sentence, with a source that does contain them), budgets that
name the unlabelled texts, tasks and sources, and an offline run with no data folder at all."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import jsonschema
import pytest

from iclkit import evaluate, resources
from iclkit.cli import main
from iclkit.data.tasks import load_task, read_spec, registry
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.export.formats import render
from iclkit.export.json_export import schema
from iclkit.export.leaderboard import build
from iclkit.learners import MetaTrainOptions
from iclkit.learners.options import run_wide
from iclkit.metatrain import source_task, text_key, training_episodes
from iclkit.protocols import MetaTrainPlan, cross_task_sources, plan_for
from iclkit.smlmt import (MASK, SmlmtBudget, SmlmtConfig, lee_news_sentences, mask, self_supervised_sources,
                          smlmt_source, split_sentences, unmasked)


def words(text: str) -> list[str]:
    """Reference tokenizer, written apart from iclkit's regex: maximal runs of str.isalpha characters, lower-cased."""
    return ["".join(run).lower() for alpha, run in itertools.groupby(text, str.isalpha) if alpha]


def normalized(text: str) -> str:
    """Reference text identity, apart from iclkit's text_key: lower-cased, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def reference_sentences(document: str) -> list[str]:
    """Reference splitter: a sentence ends at a whitespace-separated token ending in . ! or ?; >= 5 tokens kept."""
    out, current = [], []
    for token in document.split():
        current.append(token)
        if token[-1] in ".!?":
            out.append(current)
            current = []
    out.append(current)
    return [" ".join(s) for s in out if len(s) >= 5]


def items(episodes):
    return [e for ep in episodes for e in (*ep.support, *ep.query)]


@pytest.fixture(scope="module")
def lee():
    return lee_news_sentences()


def test_sentences_are_split_as_a_hand_reference_splits_them(lee):
    assert split_sentences("Short one. This one has five words! And? Yes this is six words  here.") == \
        ["This one has five words!", "Yes this is six words here."]
    path = resources.ensure(resources.LEE_BACKGROUND)
    documents = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(documents) == 300
    assert lee == [s for d in documents for s in reference_sentences(d)]
    assert len(lee) == 2613


def test_a_hand_built_source_masks_every_whole_word_occurrence_and_uses_each_sentence_once():
    sentences = [
        "The cat sat on the mat today.",
        "the  CAT sat on the mat today.",  # the same sentence up to case and spacing: counted once
        "A Cat's whiskers are long and fine.",
        "CAT and cat and Cat again here.",
        "The cat chased the dog around the yard.",  # both words: the rarer-first order gives it to 'cat' (a tie)
        "Concatenate strings with care, they tell everyone.",  # 'cat' inside a word is no occurrence
        "The dog barked at the mailman loudly.",
        "Dogs are not dog-like at all, the dog said.",
        "My dog eats more than your hotdog does.",
    ]
    name, examples = smlmt_source("toy", sentences, SmlmtConfig(min_count=3))
    by_word = {w: sorted(e.fields["text"] for e in examples if e.label == w) for w in {e.label for e in examples}}
    assert name == "toy" and by_word == {
        "cat": sorted(["The [MASK] sat on the mat today.", "A [MASK]'s whiskers are long and fine.",
                       "[MASK] and [MASK] and [MASK] again here.", "The [MASK] chased the dog around the yard."]),
        "dog": sorted(["The [MASK] barked at the mailman loudly.", "Dogs are not [MASK]-like at all, the [MASK] said.",
                       "My [MASK] eats more than your hotdog does."]),
    }
    assert len({e.id for e in examples}) == len(examples)
    assert smlmt_source("toy", sentences, SmlmtConfig(min_count=3)) == (name, examples)  # stable
    assert smlmt_source("toy", sentences, SmlmtConfig(min_count=5)) == ("toy", ())


def test_every_task_s_word_is_gone_from_its_sentences_and_recoverable(lee):
    plan = MetaTrainPlan("any", "self-supervised", "any", None, (), ("lee-news",))
    [(name, examples)] = self_supervised_sources(plan, frozenset(), key=text_key)
    originals = {normalized(s) for s in lee}
    per_word = Counter(e.label for e in examples)
    assert name == "lee-news" and len(per_word) >= 100 and min(per_word.values()) >= SmlmtConfig().min_count
    for e in examples:
        text = e.fields["text"]
        assert MASK in text and e.label not in words(text.replace(MASK, " ")), e
        assert normalized(unmasked(e)) in originals and e.label in words(unmasked(e))
    recovered = [normalized(unmasked(e)) for e in examples]
    assert len(set(recovered)) == len(recovered)  # each sentence is one class's example, once
    assert len({e.id for e in examples}) == len(examples)
    assert self_supervised_sources(plan, frozenset(), key=text_key) == [(name, examples)]
    assert {e.label for e in smlmt_source("lee-news", lee, SmlmtConfig(max_words=50, seed=1))[1]} != \
        {e.label for e in smlmt_source("lee-news", lee, SmlmtConfig(max_words=50, seed=2))[1]}


def test_masking_is_case_insensitive_and_whole_word():
    assert mask("Police said the police station, policeman and POLICE-led", "police") == \
        "[MASK] said the [MASK] station, policeman and [MASK]-led"
    assert mask("Café owners and the caf", "caf") == "Café owners and the [MASK]"


def test_meta_training_episodes_are_balanced_and_never_hold_an_evaluation_text(data_dir):
    """SST-5 holds every SST-2 sentence: named as a source (same corpus allowed), its unlabelled texts would carry
    SST-2's evaluation texts into meta-training; none does, compared on the unmasked sentence."""
    sst2 = load_task("sst2")
    options = MetaTrainOptions(meta_train="self-supervised", meta_train_tasks=("sst5",), allow_same_corpus=True,
                               meta_episodes=60, meta_pool=64)
    plan = plan_for(sst2, options, n_way=None, seed=0)
    assert plan is not None and plan.protocol == "self-supervised" and plan.sources == ("lee-news", "sst5")
    evaluation = sample_episodes(sst2, EpisodeConfig(shots=(1, 4), n_episodes=8, n_query=8))
    train = training_episodes(sst2, evaluation, options, 0, plan)
    assert {source_task(ep) for ep in train} == {"lee-news", "sst5"} and len(train) >= 60
    for ep in train:
        assert len(ep.labels) == 2 and ep.shots in (1, 4)
        assert Counter(e.label for e in ep.support) == {lab: ep.shots for lab in ep.labels}
        assert Counter(e.label for e in ep.query) == {lab: options.meta_query for lab in ep.labels}
        assert not any(e.label in words(e.fields["text"].replace(MASK, " ")) for e in (*ep.support, *ep.query))
    shown = {normalized(" ".join(e.fields.values())) for e in items(evaluation)}
    evaluated = {normalized(" ".join(e.fields.values())) for e in (*sst2.train, *sst2.test)}
    used = {normalized(unmasked(e)) for e in items(train)}
    assert used.isdisjoint(shown) and used.isdisjoint(evaluated)
    # the check can fail: without the ban, the SST-5 source holds SST-2's texts, evaluation texts among them
    unbanned = self_supervised_sources(plan, frozenset(), key=text_key)
    pool = {normalized(unmasked(e)) for _, examples in unbanned for e in examples}
    assert pool & shown and len(pool & evaluated) > 100


def test_the_budget_names_unlabelled_texts_tasks_built_and_sources(lee):
    sources = [smlmt_source("lee-news", lee, SmlmtConfig(max_words=20)),
               smlmt_source("toy", ["The cat sat here today.", "A cat ran away quickly.", "Every cat likes warm milk."],
                            SmlmtConfig(min_count=3))]
    n_texts = len({(name, normalized(unmasked(e))) for name, examples in sources for e in examples})
    n_tasks = len({(name, e.label) for name, examples in sources for e in examples})
    budget = SmlmtBudget.of(sources)
    assert (budget.n_texts, budget.n_tasks, budget.sources) == (n_texts, n_tasks, ("lee-news", "toy"))
    assert n_tasks == 20 + 1
    assert budget.text() == (f"self-supervised: {n_texts:,} unlabelled texts, 21 tasks built (masked words), "
                             f"from lee-news, toy")


def test_auto_never_picks_self_supervised_and_a_bad_protocol_is_rejected(data_dir, tmp_path, capsys):
    for name, path in registry().items():
        if read_spec(path).type != "classification":
            continue
        task = load_task(name)
        for n_way in (None, 2):
            plan = plan_for(task, MetaTrainOptions(), n_way=n_way, seed=0)
            assert plan is not None and plan.protocol in ("cross-task", "class-split"), name
        asked = plan_for(task, MetaTrainOptions(meta_train="self-supervised"), n_way=None, seed=0)
        expected, excluded = cross_task_sources(task.spec, (), False)
        assert asked.sources == ("lee-news", *expected) and asked.excluded == excluded
        assert asked.eval_classes is None and asked.train_classes == ()
    with pytest.raises(IclkitError, match="self-supervised") as e:
        run_wide(MetaTrainOptions, {"meta_train": "selfsupervised"})
    assert e.value.field == "meta_train"
    with pytest.raises(IclkitError, match="shares the corpus"):
        plan_for(load_task("sst2"), MetaTrainOptions(meta_train="self-supervised", meta_train_tasks=("sst5",)),
                 n_way=None, seed=0)
    out = tmp_path / "out"
    assert main(["run", "--no-progress", "--task", "sst2", "--methods", "maml", "--embed", "minilm",
                 "--meta-train", "smlmt", "--out", str(out)]) == 2
    assert "in-task, self-supervised" in capsys.readouterr().err and not out.exists()


def test_lee_news_alone_names_the_corpus_only_and_is_no_cross_task_source(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLKIT_DATA_DIR", str(tmp_path / "no-data"))
    task = load_task("movie-sentiment")
    alone = plan_for(task, MetaTrainOptions(meta_train="self-supervised", meta_train_tasks=("lee-news",)), None, 0)
    assert alone is not None and alone.sources == ("lee-news",) and dict(alone.excluded) == {}
    with pytest.raises(IclkitError, match="unlabelled corpus") as e:
        plan_for(task, MetaTrainOptions(meta_train="cross-task", meta_train_tasks=("lee-news",)), None, 0)
    assert e.value.field == "meta_train_tasks"


def test_an_offline_run_without_a_data_folder_meta_trains_on_the_lee_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLKIT_DATA_DIR", str(tmp_path / "no-data"))
    out = tmp_path / "run"
    result = evaluate("movie-sentiment", shots=[1], n_episodes=2, n_query=4, methods=["protonet", "maml"],
                      meta_train="self-supervised", embed="minilm", meta_episodes=40, maml_steps=5, progress=False,
                      out=out)
    maml, protonet = result.budgets[("movie-sentiment", "maml")], result.budgets[("movie-sentiment", "protonet")]
    assert protonet["meta_train"] == "none"  # a plain ProtoNet learns nothing from meta-training episodes
    # Independently of TrainingData: the distinct unmasked sentences of the episodes MAML trained on.
    options = MetaTrainOptions(meta_train="self-supervised", meta_episodes=40)
    task = load_task("movie-sentiment")
    plan = plan_for(task, options, n_way=None, seed=0)
    train = training_episodes(task, result.episodes["movie-sentiment"], options, 0, plan)
    n_texts = len({normalized(unmasked(e)) for e in items(train)})
    n_tasks = len({lab for ep in train for lab in ep.labels})
    assert maml["meta_train"] == "self-supervised" and maml["meta_tasks"] == ["lee-news"]
    assert (maml["n_meta_texts"], len(maml["meta_classes"])) == (n_texts, n_tasks) and n_texts > 300
    line = (f"- movie-sentiment: self-supervised: {n_texts:,} unlabelled texts, {n_tasks} tasks built (masked "
            f"words), from lee-news; left out: sst2 (shares the corpus rotten-tomatoes)")
    assert line in result.table()
    board = build([out])
    assert f"self-supervised: {n_texts:,} unlabelled texts" in render(board, "md")
    assert f"self-supervised: {n_texts:,} unlabelled texts" in render(board, "html")
    jsonschema.validate(json.loads(render(board, "json")), schema())
