"""``--shots auto``: shot counts 1, 2, 4, … up to the largest k whose every prompt fits the model's context window.

``--shots auto`` asks for 1, 2, 4, … and the largest k that fits; ``--shots 0,1,4,max`` for the listed counts and the
largest k; ``auto:32`` / ``max:32`` cap k at 32 (``ShotsRequest``). The runner sizes each task with ``plan_task``
over every prompt the task runs with, before any episode is drawn, and records the plan in the manifest.

Conservative: k is checked on the worst prompt any episode could draw — for each class its k longest
demonstrations, the n_way classes whose k longest are longest together, the longest query, the longest answer.
Under label probes (``--labels random|flipped|unrelated``) a demonstration is costed with the longest label word any
probe can show on it, and ``unrelated`` adds a prompt whose every label shows the longest unrelated word.
The worst prompt is counted as the backend sends it: each answer's request through ``LM.token_counts``, the ids
``loglikelihood`` scores and checks against the window (the joined text's, cut at the part boundaries; the lead (BOS)
once, none when the prompt writes it), plus ``reserve`` tokens (the tokens a generation may add). Counting prefix,
context and answer one by one (``prompt_tokens``) is a token off at a boundary: a SentencePiece prefix space in front
of each part, Llama 3's period joined with the newlines after it. The count costs a few tokenizations per k tried
(0.5 s of a 15 s plan on AG News with ``--labels random``); the time goes to ranking.

Demonstrations and queries are ranked by their own tokens (a one-demonstration prefix, a query's context; memoized
``LM.tokenize``), so the worst prompt is the longest any episode can send as long as a demonstration adds the same
tokens wherever it stands and in any order: true when the separator ends a pre-token and no merge crosses it (the
shipped templates' newlines), which tests/test_model_families.py checks against every prompt a toy task can draw,
under gold and random labels, for GPT-2's byte-level BPE, a Llama 2-style SentencePiece, Llama 3's split and
SmolLM2's tokenizer. Worst case means pessimistic for long-tailed lengths: on AG News with SmolLM2 (8,192 tokens)
the longest 1-shot prompt is 1,335 tokens, so k stops at 10, while 20 drawn 8-shot episodes needed at most 1,861
tokens and 16-shot ones at most 3,744.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.lm.base import LoglikelihoodRequest
from iclkit.probes import shown_labels, unrelated_candidates
from iclkit.prompts import PromptTemplate, Rendered, fill
from iclkit.types import Example

if TYPE_CHECKING:
    from iclkit.data.tasks import TaskData
    from iclkit.lm.base import LM

Renderer = Callable[[Sequence[Example], Example], Rendered]  # (demonstrations, query) → the rendered prompt
Length = Callable[[str], int]  # text → its number of tokens
Count = Callable[[Rendered], int]  # a rendered prompt → tokens of its longest request, lead included
Shown = Callable[[Example], Sequence[str]]  # a demonstration → every label it may show (a label probe widens them)
Limit = Literal["context", "data", "max_shots"]


@dataclass(frozen=True)
class ShotPlan:
    """The shot counts chosen, the largest k that fits, what stopped it, and the worst prompt's tokens per k."""

    shots: tuple[int, ...]
    max_shots: int
    limited_by: Limit  # context: k + 1 would not fit; data: a class has no more examples; max_shots: the cap
    context_length: int
    prompt_tokens: Mapping[int, int]  # worst-case prompt tokens (with reserve) for each k in ``shots``

    def to_dict(self) -> dict[str, Any]:
        return {"shots": list(self.shots), "max_shots": self.max_shots, "limited_by": self.limited_by,
                "context_length": self.context_length,
                "prompt_tokens": {str(k): v for k, v in sorted(self.prompt_tokens.items())}}


@dataclass(frozen=True)
class ShotsRequest:
    """What ``--shots`` asked for when it names ``auto`` or ``max``: the counts listed beside it, whether the powers of
    two below the largest fitting k are wanted (``auto``), and a cap on k (``auto:N`` / ``max:N``)."""

    listed: tuple[int, ...] = ()
    powers: bool = True
    cap: int | None = None

    def __str__(self) -> str:
        word = ("auto" if self.powers else "max") + (f":{self.cap}" if self.cap is not None else "")
        return ",".join([*map(str, self.listed), word])

    def pick(self, plan: ShotPlan) -> tuple[int, ...]:
        """The shot counts to run under ``plan``: the listed counts (each must fit), the powers of two below its
        largest k (``auto``), and the largest k itself; sorted."""
        too_many = [k for k in self.listed if k > plan.max_shots]
        if too_many:
            raise IclkitError(f"{too_many[0]} shots do not fit: at most {plan.max_shots} shots per class fit "
                              f"({_why(plan)})", field="shots", hint=f"drop {too_many[0]}, or use --shots {self}")
        picked = set(self.listed) | {plan.max_shots} | (set(plan.shots) if self.powers else set())
        return tuple(sorted(picked))


def _why(plan: ShotPlan) -> str:
    return {"context": f"the model's context window is {plan.context_length} tokens",
            "data": "a class has no more train examples", "max_shots": "the cap"}[plan.limited_by]


def parse_shots(value: Any) -> ShotsRequest | None:
    """``ShotsRequest`` for a ``--shots`` value naming ``auto`` or ``max`` (e.g. ``"auto"``, ``"1,4,max"``,
    ``"auto:32"``); None for plain counts, which ``EpisodeConfig.shots`` takes."""
    items = [str(x).strip() for x in (value.split(",") if isinstance(value, str) else
                                      value if isinstance(value, (list, tuple)) else [value])]
    items = [x for x in items if x]
    words = [x for x in items if x.split(":")[0].lower() in ("auto", "max")]
    if not words:
        return None
    if len(words) > 1:
        raise IclkitError(f"name auto or max once, got {value!r}", field="shots",
                          hint="--shots auto (1, 2, 4, … and the largest k that fits) or --shots 0,4,max")
    word, _, cap_text = words[0].partition(":")
    cap = None
    if cap_text:
        if not cap_text.isdigit() or int(cap_text) < 1:
            raise IclkitError(f"the cap in {words[0]!r} must be a whole number ≥ 1", field="shots")
        cap = int(cap_text)
    try:
        listed = tuple(int(x) for x in items if x not in words)
    except ValueError:
        raise IclkitError(f"expected shot counts, auto or max, got {value!r}", field="shots") from None
    if any(k < 0 for k in listed) or len(set(listed)) != len(listed):
        raise IclkitError(f"shot counts must be distinct and ≥ 0, got {value!r}", field="shots")
    return ShotsRequest(listed=listed, powers=word.lower() == "auto", cap=cap)


def template_renderer(template: PromptTemplate, labels: Sequence[str]) -> Renderer:
    """The plain (non-chat) rendering of ``template`` with candidate ``labels``, as ICL scores it."""
    return lambda demos, query: template.render(demos, query, labels)


def prompt_tokens(rendered: Rendered, length: Length) -> int:
    """Tokens of the longest request for one query by a bare ``length``: prefix, context and the longest answer, each
    counted alone (whitespace that ends the prefix with the context). ``plan_task`` counts through the LM instead
    (``request_counter``), as the backend tokenizes the joined text."""
    body = rendered.prefix.rstrip()
    rest = rendered.prefix[len(body):] + rendered.context
    answers = list(rendered.continuations.values()) or [rendered.target]
    return length(body) + length(rest) + max(length(a) for a in answers)


def request_counter(lm: "LM") -> Count:
    """``Count`` by ``lm.token_counts``: the ids the backend sends for each answer's request (lead, joined-text
    boundaries and all), the longest of them."""
    def count(rendered: Rendered) -> int:
        answers = list(rendered.continuations.values()) or [rendered.target]
        return max(lm.token_counts([LoglikelihoodRequest(rendered.prefix, rendered.context, a) for a in answers]))

    return count


def auto_shots(train: Sequence[Example], render: Renderer, length: Length, context_length: int, *,
               labels: Sequence[str] = (), n_way: int | None = None, queries: Sequence[Example] = (),
               reserve: int = 0, max_shots: int | None = None, count: Count | None = None,
               shown: Shown | None = None) -> ShotPlan:
    """Shot counts 1, 2, 4, … and the largest k (if not a power of two) whose worst-case prompt fits.

    ``labels``: the task's classes (empty for open-answer tasks: all of ``train`` is one pool); ``n_way``: classes
    per episode (default: all); ``queries``: where queries come from (default: ``train``); ``max_shots``: a cap;
    ``count``: the tokens of the worst prompt (default ``prompt_tokens`` by ``length``; ``length`` then only ranks
    demonstrations and queries); ``shown``: the labels a demonstration may show (default its own; a demonstration
    counts with the longest).
    """
    if context_length <= 0:
        raise IclkitError("the model does not report its context window, so --shots auto cannot size prompts",
                          field="shots", hint="list the shot counts, e.g. --shots 1,2,4,8")
    if max_shots is not None and max_shots < 1:
        raise IclkitError(f"max_shots must be at least 1, got {max_shots}", field="shots")
    pools: dict[str, list[Example]] = {lab: [] for lab in labels} if labels else {"": []}
    for e in train:
        key = e.label if labels else ""
        if key in pools:
            pools[key].append(e)
    n_way = n_way or len(pools)
    if not 1 <= n_way <= len(pools) or any(not p for p in pools.values()):
        empty = [lab for lab, p in pools.items() if not p]
        raise IclkitError(f"cannot size {n_way}-way prompts: " + (f"no train examples for {empty}" if empty else
                          f"the task has {len(pools)} classes"), field="shots")
    query = max(queries or train, key=lambda q: (length(render((), q).context), q.id))
    # each demonstration as it is longest: with the longest label word a probe can give it
    worst = {e: max((replace(e, label=lab) for lab in (shown(e) if shown else (e.label,))),
                    key=lambda d: (length(render((d,), query).prefix), d.label)) for p in pools.values() for e in p}
    cost = {e: length(render((worst[e],), query).prefix) for e in worst}
    ranked = {lab: sorted(p, key=lambda e: (-cost[e], e.id)) for lab, p in pools.items()}
    cap = min(len(p) for p in ranked.values())
    limit: Limit = "data"
    if max_shots is not None and max_shots < cap:
        cap, limit = max_shots, "max_shots"

    counted: dict[int, int] = {}

    def tokens(k: int) -> int:
        if k not in counted:
            heaviest = sorted(ranked, key=lambda lab: (-sum(cost[e] for e in ranked[lab][:k]), lab))[:n_way]
            rendered = render([worst[e] for lab in heaviest for e in ranked[lab][:k]], query)
            counted[k] = (count(rendered) if count is not None else prompt_tokens(rendered, length)) + reserve
        return counted[k]

    first = tokens(1)
    if first > context_length:
        raise IclkitError(f"even 1 shot does not fit: the longest 1-shot prompt is {first} tokens, the model's "
                          f"context window {context_length}", field="shots",
                          hint="use a model with a longer context, a shorter prompt, or fewer classes per episode")
    fits, too_long = 1, None  # largest k known to fit; smallest known not to
    while too_long is None and fits < cap:
        k = min(2 * fits, cap)
        if tokens(k) <= context_length:
            fits = k
        else:
            too_long = k
    if too_long is not None:
        limit = "context"
        while too_long - fits > 1:
            mid = (fits + too_long) // 2
            fits, too_long = (mid, too_long) if tokens(mid) <= context_length else (fits, mid)
    powers = [2 ** i for i in range(fits.bit_length()) if 2 ** i <= fits]
    shots = tuple(dict.fromkeys(powers + [fits]))
    return ShotPlan(shots=shots, max_shots=fits, limited_by=limit, context_length=context_length,
                    prompt_tokens={k: tokens(k) for k in shots})


def plan_task(task: "TaskData", prompts: Sequence[PromptTemplate], lm: "LM", *, n_way: int | None = None,
              classes: Sequence[str] | None = None, chat: bool = False, max_shots: int | None = None,
              max_new_tokens: int = 0, probes: Sequence[str] = ("gold",)) -> ShotPlan:
    """The shot plan of ``task`` under the tightest of ``prompts``: the largest k whose worst-case prompt fits
    ``lm``'s context window under every prompt and label probe, ranked by ``lm``'s tokenizer and counted by
    ``lm.token_counts`` as the backend sends it (in its chat format with ``chat``, lead (BOS) tokens included).

    ``classes``: the evaluated classes (a class-split's held-out ones); ``max_new_tokens``: tokens a generation may
    add (open-answer tasks); ``probes``: the run's label probes (``--labels``)."""
    labels = tuple(classes) if classes is not None else task.labels if task.spec.type != "generation" else ()
    train = [e for e in task.train if not labels or e.label in labels]
    queries = [e for e in task.test if not labels or e.label in labels]
    memo: dict[str, int] = {}

    def length(text: str) -> int:
        if text not in memo:
            memo[text] = len(lm.tokenize(text))
        return memo[text]

    def shown(e: Example) -> Sequence[str]:
        return shown_labels(probes, e.label, labels)

    # (prompt, what its demonstrations may show): random/flipped relabel demonstrations under the prompt's own words;
    # unrelated shows gold labels as unrelated words, costed with every label shown as the longest such word
    variants: list[tuple[PromptTemplate, Shown | None]] = [(prompt, shown) for prompt in prompts]
    if "unrelated" in probes and labels:
        for prompt in prompts:
            longest = max(unrelated_candidates(labels, n_way or len(labels)),
                          key=lambda w, p=prompt: (length(fill(p.target, {"label": w})), w))
            variants.append((replace(prompt, verbalizer={lab: longest for lab in labels}), None))
    count = request_counter(lm)
    plans = [auto_shots(train, _renderer(prompt, labels, lm, chat), length, lm.context_length, labels=labels,
                        n_way=n_way, queries=queries, reserve=max_new_tokens, max_shots=max_shots, count=count,
                        shown=show) for prompt, show in variants]
    return min(plans, key=lambda p: (p.max_shots, -max(p.prompt_tokens.values())))


def _renderer(prompt: PromptTemplate, labels: Sequence[str], lm: "LM", chat: bool) -> Renderer:
    if not chat:
        return template_renderer(prompt, labels)
    return lambda demos, query: prompt.render_chat(demos, query, labels, lm.apply_chat_template)


def shots_line(task: str, plan: Mapping[str, Any]) -> str:
    """One line of the printed table on how ``--shots auto`` sized ``task``."""
    k = plan["max_shots"]
    worst = plan["prompt_tokens"].get(str(k))
    why = {"context": f"{k + 1} would not fit", "data": "a class has no more train examples",
           "max_shots": "the cap asked for"}[plan["limited_by"]]
    return (f"- {task}: {', '.join(map(str, plan['shots_run']))} shots; the largest, {k}, needs at most "
            f"{worst:,} of {plan['context_length']:,} tokens ({why})")
