"""``--shots auto``: shot counts 1, 2, 4, … up to the largest k whose every prompt fits the model's context window.

Conservative: k is checked on the worst prompt any episode could draw — for each class its k longest
demonstrations, the n_way classes whose k longest are longest together, the longest query, the longest answer.
Lengths are counted as the LM counts them: prefix (instruction + demonstrations), query context and answer are
tokenized separately (see iclkit.lm.base.LoglikelihoodRequest; ``prompt_tokens``), plus ``reserve`` tokens (e.g.
a BOS token, or the tokens a generation may add). Demonstrations are ranked by the length of a one-demonstration
prefix, so the worst prompt is exact up to how a tokenizer merges text across the separator between two
demonstrations. Worst case means pessimistic for long-tailed lengths: on AG News with SmolLM2 (8,192 tokens) the
longest 1-shot prompt is 1,335 tokens, so k stops at 10, while 20 drawn 8-shot episodes needed at most 1,861
tokens and 16-shot ones at most 3,744.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.prompts import PromptTemplate, Rendered
from iclkit.types import Example

Renderer = Callable[[Sequence[Example], Example], Rendered]  # (demonstrations, query) → the rendered prompt
Length = Callable[[str], int]  # text → its number of tokens
Limit = Literal["context", "data", "max_shots"]


@dataclass(frozen=True)
class ShotPlan:
    """The shot counts chosen, the largest k that fits, what stopped it, and the worst prompt's tokens per k."""

    shots: tuple[int, ...]
    max_shots: int
    limited_by: Limit  # context: k + 1 would not fit; data: a class has no more examples; max_shots: the cap
    context_length: int
    prompt_tokens: Mapping[int, int]  # worst-case prompt tokens (with reserve) for each k in ``shots``


def template_renderer(template: PromptTemplate, labels: Sequence[str]) -> Renderer:
    """The plain (non-chat) rendering of ``template`` with candidate ``labels``, as ICL scores it."""
    return lambda demos, query: template.render(demos, query, labels)


def prompt_tokens(rendered: Rendered, length: Length) -> int:
    """Tokens of the longest request for one query: prefix, context and the longest answer, each tokenized alone;
    whitespace that ends the prefix is counted with the context, as the hf backend tokenizes it
    (``HFCausalLM.split``)."""
    body = rendered.prefix.rstrip()
    answers = list(rendered.continuations.values()) or [rendered.target]
    return length(body) + length(rendered.prefix[len(body):] + rendered.context) + max(length(a) for a in answers)


def auto_shots(train: Sequence[Example], render: Renderer, length: Length, context_length: int, *,
               labels: Sequence[str] = (), n_way: int | None = None, queries: Sequence[Example] = (),
               reserve: int = 0, max_shots: int | None = None) -> ShotPlan:
    """Shot counts 1, 2, 4, … and the largest k (if not a power of two) whose worst-case prompt fits.

    ``labels``: the task's classes (empty for open-answer tasks: all of ``train`` is one pool); ``n_way``: classes
    per episode (default: all); ``queries``: where queries come from (default: ``train``); ``max_shots``: a cap.
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
    cost = {e: length(render((e,), query).prefix) for p in pools.values() for e in p}
    ranked = {lab: sorted(p, key=lambda e: (-cost[e], e.id)) for lab, p in pools.items()}
    cap = min(len(p) for p in ranked.values())
    limit: Limit = "data"
    if max_shots is not None and max_shots < cap:
        cap, limit = max_shots, "max_shots"

    def tokens(k: int) -> int:
        heaviest = sorted(ranked, key=lambda lab: (-sum(cost[e] for e in ranked[lab][:k]), lab))[:n_way]
        demos = [e for lab in heaviest for e in ranked[lab][:k]]
        return prompt_tokens(render(demos, query), length) + reserve

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
