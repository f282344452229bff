"""--shots auto: the largest k checked against a brute force with a word-count "tokenizer", and against the real
SmolLM2 tokenizer and its context window on SST-2."""

from __future__ import annotations

import itertools

import pytest

from iclkit.data.tasks import load_task
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.lm import LoglikelihoodRequest
from iclkit.prompts import PromptTemplate, load_prompt
from iclkit.shots import auto_shots, prompt_tokens, template_renderer
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
