"""--shots auto: the largest k checked against a brute force with a word-count "tokenizer", and against the real
SmolLM2 tokenizer and its context window on SST-2."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Sequence

import pytest

from iclkit.cli import main
from iclkit.data.tasks import load_task
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.lm import LoglikelihoodRequest
from iclkit.lm.base import lead_for
from iclkit.prompts import PromptTemplate, load_prompt
from iclkit.shots import ShotPlan, ShotsRequest, auto_shots, parse_shots, plan_task, prompt_tokens, template_renderer
from iclkit.types import Example

TEMPLATE = PromptTemplate(name="t", template="Review: {text}\nSentiment:", target=" {label}",
                          instruction="Classify.\n\n")
LABELS = ("pos", "neg")


def words(text: str) -> int:
    return len(text.split())


def example(label: str, n: int, i: int = 0) -> Example:
    return Example(f"{label}{n}-{i}", {"text": " ".join(["w"] * n)}, label)


# pos texts of 1..10 words, neg texts of 1..5 words; queries up to 7 words
TRAIN = [example("pos", n) for n in range(1, 11)] + [example("neg", n) for n in range(1, 6)]
QUERIES = [example("pos", n, 1) for n in (2, 7, 3)]


def brute_force_max_k(context: int, n_way: int = 2) -> int:
    """Largest k such that every k-shot prompt any episode could draw fits (every class subset, demonstration
    subset and query), by enumeration."""
    render = template_renderer(TEMPLATE, LABELS)
    by_label = {lab: [e for e in TRAIN if e.label == lab] for lab in LABELS}
    best = 0
    for k in range(1, 6):
        worst = max(prompt_tokens(render([d for part in parts for d in part], q), words)
                    for classes in itertools.combinations(LABELS, n_way)
                    for parts in itertools.product(*(itertools.combinations(by_label[c], k) for c in classes))
                    for q in QUERIES)
        if worst > context:
            break
        best = k
    return best


@pytest.mark.parametrize("context,n_way", [(32, 2), (50, 2), (67, 2), (68, 2), (90, 2), (200, 2), (40, 1), (60, 1)])
def test_largest_k_equals_a_brute_force(context, n_way):
    plan = auto_shots(TRAIN, template_renderer(TEMPLATE, LABELS), words, context, labels=LABELS, n_way=n_way,
                      queries=QUERIES)
    k = brute_force_max_k(context, n_way)
    assert plan.max_shots == k
    assert plan.shots == tuple(dict.fromkeys([p for p in (1, 2, 4) if p <= k] + [k]))
    assert all(plan.prompt_tokens[s] <= context for s in plan.shots)
    assert plan.limited_by == ("data" if k == 5 else "context")


def test_hand_computed_prompt_lengths():
    # words per demo: "Review:" + text + "Sentiment:" + label = n + 3; instruction 1; query context n_q + 2; answer 1
    # k=2 worst: pos 10, 9 and neg 5, 4 → 1 + (13 + 12) + (8 + 7) + (7 + 2) + 1 = 51
    plan = auto_shots(TRAIN, template_renderer(TEMPLATE, LABELS), words, 51, labels=LABELS, queries=QUERIES)
    assert plan.prompt_tokens == {1: 1 + 13 + 8 + 9 + 1, 2: 51} and plan.shots == (1, 2)
    capped = auto_shots(TRAIN, template_renderer(TEMPLATE, LABELS), words, 10_000, labels=LABELS, max_shots=3)
    assert (capped.shots, capped.limited_by) == ((1, 2, 3), "max_shots")
    assert auto_shots(TRAIN, template_renderer(TEMPLATE, LABELS), words, 10_000, labels=LABELS).shots == (1, 2, 4, 5)


def test_no_room_for_one_shot_is_a_user_error():
    with pytest.raises(IclkitError, match="even 1 shot does not fit") as e:
        auto_shots(TRAIN, template_renderer(TEMPLATE, LABELS), words, 30, labels=LABELS, queries=QUERIES)
    assert e.value.field == "shots"
    with pytest.raises(IclkitError, match="context window"):
        auto_shots(TRAIN, template_renderer(TEMPLATE, LABELS), words, 0, labels=LABELS)
    with pytest.raises(IclkitError, match="no train examples"):
        auto_shots(TRAIN, template_renderer(TEMPLATE, LABELS + ("mixed",)), words, 100, labels=LABELS + ("mixed",))


def test_sst2_with_the_real_tokenizer_and_context_window(smol):
    task = load_task("sst2")
    template = load_prompt(task.spec.prompt)
    render = template_renderer(template, task.labels)
    length = lambda text: len(smol.tokenize(text))  # noqa: E731
    assert smol.context_length == 8192
    plan = auto_shots(task.train, render, length, smol.context_length, labels=task.labels, queries=task.test)
    k = plan.max_shots
    assert plan.limited_by == "context" and k > 8 and plan.shots[:4] == (1, 2, 4, 8) and plan.shots[-1] == k

    def lm_tokens(prefix: str, context: str, continuation: str) -> int:  # as the hf backend counts a request
        return len(smol.request_ids(prefix, context)) + len(smol.tokenize(continuation))

    # real episodes at k: every request fits, and none is longer than the worst case the plan computed
    episodes = sample_episodes(task, EpisodeConfig(shots=(k,), n_episodes=3, n_query=16, seed=0))
    longest = max(lm_tokens(r.prefix, r.context, c) for ep in episodes for q in ep.query
                  for r in [render(ep.support, q)] for c in r.continuations.values())
    assert longest <= plan.prompt_tokens[k] <= 8192
    # k + 1 longest demonstrations per class with the longest query do not fit: the model itself refuses them
    def demo_tokens(e: Example) -> int:
        return len(smol.tokenize(template.example(e) + template.answer(e.label)))

    heavy = [e for lab in task.labels for e in sorted((x for x in task.train if x.label == lab), key=demo_tokens,
                                                       reverse=True)[:k + 1]]
    query = max(task.test, key=lambda q: len(smol.tokenize(template.example(q))))
    r = render(heavy, query)
    with pytest.raises(IclkitError, match="longer than the model's context window"):
        smol.loglikelihood([LoglikelihoodRequest(r.prefix, r.context, c) for c in r.continuations.values()])


@pytest.mark.parametrize("value,listed,powers,cap", [
    ("auto", (), True, None), ("AUTO:16", (), True, 16), ("0,4,max", (0, 4), False, None),
    ("1, 2, max:32", (1, 2), False, 32), (["auto"], (), True, None)])
def test_shots_requests_parse(value, listed, powers, cap):
    assert parse_shots(value) == ShotsRequest(listed, powers, cap)
    assert parse_shots(str(ShotsRequest(listed, powers, cap))) == ShotsRequest(listed, powers, cap)  # round trip


@pytest.mark.parametrize("value", ["0,1,4", "8", [1, 2]])
def test_plain_shot_counts_are_not_requests(value):
    assert parse_shots(value) is None


@pytest.mark.parametrize("value,message", [("auto,max", "once"), ("auto:0", "cap"), ("auto:x", "cap"),
                                           ("1,x,max", "expected shot counts"), ("4,4,max", "distinct")])
def test_bad_shots_requests_name_the_option(value, message):
    with pytest.raises(IclkitError, match=message) as e:
        parse_shots(value)
    assert e.value.field == "shots"


def test_a_request_picks_listed_powers_and_the_largest():
    plan = ShotPlan(shots=(1, 2, 4, 8, 11), max_shots=11, limited_by="context", context_length=100,
                    prompt_tokens={})
    assert ShotsRequest().pick(plan) == (1, 2, 4, 8, 11)
    assert ShotsRequest((0, 3), powers=False).pick(plan) == (0, 3, 11)
    with pytest.raises(IclkitError, match="16 shots do not fit: at most 11 .* context window is 100 tokens"):
        ShotsRequest((1, 16), powers=False).pick(plan)


def _run(tmp_path, *args):
    return main(["run", "--task", "movie-sentiment", "--episodes", "2", "--n-query", "3", "--no-progress",
                 "--dtype", "float32", *args])


def test_shots_auto_runs_every_method_up_to_the_context_limit(tmp_path, capsys, smol):
    out = tmp_path / "run"
    assert _run(tmp_path, "--shots", "auto", "--context-length", "800", "--methods", "icl,protonet,knn",
                "--embed", "minilm", "--out", str(out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    plan = manifest["shots_auto"]["movie-sentiment"]
    task = load_task("movie-sentiment")
    expected = plan_task(task, [load_prompt(task.spec.prompt)], smol_with_window(smol, 800))
    assert plan["max_shots"] == expected.max_shots and plan["limited_by"] == "context" and plan["context_length"] == 800
    k = plan["max_shots"]
    assert 2 < k and plan["shots_run"] == sorted({2 ** i for i in range(k.bit_length()) if 2 ** i <= k} | {k})
    assert manifest["config"]["episodes"]["shots"] == "auto" and manifest["model"]["context_length"] == 800
    summary = json.loads((out / "summary.json").read_text())["results"]
    assert {(r["method"], r["shots"]) for r in summary} == {(m, s) for m in ("icl", "protonet", "knn")
                                                            for s in plan["shots_run"]}
    # every prompt the run scored fits in the window (the backend refuses longer ones), and the worst case the plan
    # computed bounds the real prompts of the largest k
    template, labels = load_prompt(task.spec.prompt), task.labels
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    longest = 0
    for ep in (e for e in episodes if e["shots"] == k):
        support = [Example.from_dict(x) for x in ep["support"]]
        for q in ep["query"]:
            r = template.render(support, Example.from_dict(q), labels)
            longest = max(longest, max(len(smol.request_ids(r.prefix, r.context)) + len(smol.tokenize(c))
                                       for c in r.continuations.values()))
    assert longest <= plan["prompt_tokens"][str(k)] <= 800
    assert "Shots sized to the model's context window (--shots auto)" in capsys.readouterr().out


def smol_with_window(lm, n):
    """The same model and tokenizer, seen through a ``n``-token window (as ``--context-length n`` loads it)."""
    from iclkit.lm.hf import HFCausalLM

    return HFCausalLM(lm.model, lm.tokenizer, batch_size=lm.batch_size, info=lm.describe(), context_length=n)


@pytest.mark.parametrize("args,message", [
    (("--shots", "auto", "--context-length", "30"), "even 1 shot does not fit"),
    (("--shots", "1,64,max", "--context-length", "400"), "64 shots do not fit"),
    (("--shots", "auto", "--context-length", "-1"), "context_length"),
    (("--shots", "auto,max"), "once")])
def test_shots_auto_bad_input_exits_2_with_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert _run(tmp_path, *args, "--methods", "icl", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2, err
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_config_files_and_the_api_take_the_same_shots_requests():
    from iclkit.runner.config import RunConfig

    for given in ("auto", ["auto"], "0,4,max:16"):
        config = RunConfig.from_options({"shots": given})
        assert config.auto_shots == parse_shots(given)
        assert config.to_dict()["episodes"]["shots"] == str(parse_shots(given))
    plain = RunConfig.from_options({"shots": "0,4"})
    assert plain.auto_shots is None and plain.episodes.shots == (0, 4) and "auto_shots" not in plain.to_dict()


# --- the lead (BOS), chat formats, asymmetric label words and label probes, against an enumeration ----------------

class WordLM:
    """The members of the LM protocol ``plan_task`` reads, over a word-count tokenizer: one token per word, ``<s>``
    the BOS word (id 0). ``lead``: the tokens it puts before a prompt; ``bos_chat``: its chat template writes ``<s>``
    itself (as Llama 3's and Gemma's do)."""

    def __init__(self, context_length: int, lead: tuple[int, ...] = (), bos_chat: bool = False):
        self.context_length, self.lead, self.bos_chat = context_length, list(lead), bos_chat

    def tokenize(self, text: str) -> list[int]:
        return [0 if w == "<s>" else 1 + sum(map(ord, w)) for w in text.split()]

    def token_counts(self, requests: Sequence[LoglikelihoodRequest]) -> list[int]:
        """Its lead unless the text opens with it already, then the tokens of prefix, context and answer (a word
        tokenizer: the parts' tokens are the joined text's)."""
        counts = []
        for r in requests:
            prompt = self.tokenize(r.prefix) + self.tokenize(r.context)
            counts.append(len(lead_for(self.lead, prompt)) + len(prompt) + len(self.tokenize(r.continuation)))
        return counts

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        turns = "".join(f"<{m['role']}> {m['content']} <end> " for m in messages)
        return ("<s> " if self.bos_chat else "") + turns + "<assistant> "


def request_tokens(lm: WordLM, prefix: str, context: str, answer: str) -> int:
    """Tokens of one request as a backend sends it, written out here: its lead unless the text opens with the BOS
    word already, then every word of prefix, context and answer."""
    opens_with_bos = (prefix + context).split()[:1] == ["<s>"] and lm.lead == [0]
    return (0 if opens_with_bos else len(lm.lead)) + words(prefix) + words(context) + words(answer)


def toy_task(train, test, labels):
    from iclkit.data.spec import TaskData, TaskSpec

    spec = TaskSpec(name="toy", type="classification", inputs=("text",), labels=labels, prompt="", sources=())
    return TaskData(spec=spec, train=tuple(train), test=tuple(test), source="test")


def enumerate_worst(task, prompt, lm, k: int, *, chat: bool = False, relabel: bool = False) -> int:
    """The longest request any k-shot episode (all classes) can send, by enumeration: every choice of k
    demonstrations per class, every query, and with ``relabel`` every label each demonstration could be shown
    with (what random labels can draw, and flipped ones among them)."""
    labels = task.labels
    by_label = {lab: [e for e in task.train if e.label == lab] for lab in labels}
    worst = 0
    for parts in itertools.product(*(itertools.combinations(by_label[lab], k) for lab in labels)):
        demos = [d for part in parts for d in part]
        for shown in itertools.product(labels, repeat=len(demos)) if relabel else [[d.label for d in demos]]:
            shown_demos = [Example(d.id, d.fields, lab) for d, lab in zip(demos, shown)]
            for q in task.test:
                r = (prompt.render_chat(shown_demos, q, labels, lm.apply_chat_template) if chat
                     else prompt.render(shown_demos, q, labels))
                worst = max(worst, max(request_tokens(lm, r.prefix, r.context, c) for c in r.continuations.values()))
    return worst


# The issue's example: a 1-word and a 4-word label. Gold labels: k=3 needs 54 tokens of a 60-token window; random
# labels can give the three long positive demonstrations the 4-word label: 63 tokens.
ASYMMETRIC = PromptTemplate(name="a", template="Review: {text}\nSentiment:", target=" {label}",
                            instruction="Classify.\n\n", verbalizer={"pos": "good", "neg": "not good at all"})
TOY = toy_task([example("pos", n) for n in range(1, 6)] + [example("neg", n, i) for i, n in enumerate((1, 1, 2, 3))],
               [example("pos", 2, 9)], ("pos", "neg"))


def test_gold_planning_with_asymmetric_label_words_equals_the_enumeration():
    plan = plan_task(TOY, [ASYMMETRIC], WordLM(60))
    assert (plan.max_shots, plan.prompt_tokens[3]) == (3, 54)
    assert all(plan.prompt_tokens[k] == enumerate_worst(TOY, ASYMMETRIC, WordLM(60), k) for k in plan.shots)


@pytest.mark.parametrize("probes", [("gold", "random"), ("gold", "flipped"), ("gold", "random", "flipped")])
def test_label_probes_plan_an_upper_bound_the_issue_example(probes):
    lm = WordLM(60)
    assert enumerate_worst(TOY, ASYMMETRIC, lm, 3, relabel=True) == 63  # what the old plan let through
    plan = plan_task(TOY, [ASYMMETRIC], lm, probes=probes)
    k = plan.max_shots
    assert k == 2 and plan.limited_by == "context"
    for s in plan.shots:  # the bound is exact: binary flipped can give every demonstration the other label too
        assert plan.prompt_tokens[s] == enumerate_worst(TOY, ASYMMETRIC, lm, s, relabel=True) <= 60
    assert enumerate_worst(TOY, ASYMMETRIC, lm, k + 1, relabel=True) > 60


def test_the_unrelated_probe_costs_its_longest_word():
    """Labels "a"/"b" shown as "foo"/"bar" under ``unrelated``: with a tokenizer that splits words into 2-character
    pieces each of those is one token longer, in every demonstration and in the answer."""
    class PieceLM(WordLM):
        def tokenize(self, text: str) -> list[int]:
            return [1 + sum(map(ord, w[i:i + 2])) for w in text.split() for i in range(0, len(w), 2)]

    from iclkit.episodes import EpisodeConfig
    from iclkit.probes import perturb_labels

    prompt = PromptTemplate(name="u", template="{text} =", target=" {label}")
    task = toy_task([example("a", n, i) for i in range(3) for n in (1, 2)] + [example("b", 1, i) for i in range(6)],
                    [example("a", 3, 9)], ("a", "b"))
    lm = PieceLM(10_000)
    gold, unrelated = plan_task(task, [prompt], lm), plan_task(task, [prompt], lm, probes=("gold", "unrelated"))
    pieces = lambda text: len(lm.tokenize(text))  # noqa: E731
    for k in (1, 2, 4):
        longest = 0
        for ep in sample_episodes(task, EpisodeConfig(shots=(k,), n_episodes=20, n_query=1, seed=0)):
            shown = replace(prompt, verbalizer=perturb_labels(ep, "unrelated", 0).probe.mapping)
            for q in ep.query:
                r = shown.render(ep.support, q, ep.labels)
                longest = max(longest, max(pieces(r.prefix) + pieces(r.context) + pieces(c)
                                           for c in r.continuations.values()))
        assert longest <= unrelated.prompt_tokens[k]
        assert gold.prompt_tokens[k] < longest  # the gold plan alone would not bound these prompts
        assert unrelated.prompt_tokens[k] == gold.prompt_tokens[k] + 2 * k + 1  # 2k demonstrations and the answer


@pytest.mark.parametrize("lead", [(), (0,), (0, 7)])
def test_the_lead_is_counted_at_its_real_length(lead):
    lm = WordLM(60, lead=lead)
    plan = plan_task(TOY, [ASYMMETRIC], lm)
    assert all(plan.prompt_tokens[k] == enumerate_worst(TOY, ASYMMETRIC, lm, k) for k in plan.shots)
    assert plan.prompt_tokens[3] == 54 + len(lead)


@pytest.mark.parametrize("bos_chat", [False, True])
def test_chat_prompts_count_the_lead_once(bos_chat):
    """--chat: the template's turn markers are costed, and a template that writes BOS itself gets no second one."""
    lm = WordLM(200, lead=(0,), bos_chat=bos_chat)
    plan = plan_task(TOY, [ASYMMETRIC], lm, chat=True, probes=("gold", "random"))
    plain = plan_task(TOY, [ASYMMETRIC], lm, probes=("gold", "random"))
    for k in plan.shots:
        expected = enumerate_worst(TOY, ASYMMETRIC, lm, k, chat=True, relabel=True)
        assert plan.prompt_tokens[k] == expected
        # three markers (<user>, <end>, <assistant>); the answer loses nothing (one word either way); the BOS word
        # is written by the template instead of being put in front, so it counts once
        assert expected == plain.prompt_tokens[k] + 3


def test_the_runner_plans_under_the_runs_label_probes():
    from iclkit.runner.config import RunConfig
    from iclkit.runner.plan import plan_shots

    config = RunConfig.from_options({"shots": "auto", "labels": "random", "methods": "icl"})
    plan = plan_shots(TOY, [ASYMMETRIC], WordLM(60), config, config.auto_shots, None)
    assert plan.max_shots == 2 and plan == plan_task(TOY, [ASYMMETRIC], WordLM(60), probes=("gold", "random"))
