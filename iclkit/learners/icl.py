"""In-context learning: rank classification over verbalizers, or greedy generation for open answers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from ..lm.base import LM, GenerationRequest, LoglikelihoodRequest
from ..prompts import PromptTemplate, Rendered
from ..types import Example, Prediction
from .base import classification_prediction

Normalize = Literal["sum", "mean"]


@dataclass(frozen=True)
class ICL:
    """k-shot prompting of a causal LM. ``normalize='mean'`` divides each label's log-prob by its token count."""

    lm: LM
    prompt: PromptTemplate
    normalize: Normalize = "sum"
    chat: bool = False
    max_new_tokens: int = 8
    name: str = "icl"

    def describe(self) -> Mapping[str, Any]:
        return {"method": self.name, "normalize": self.normalize, "chat": self.chat, "prompt": self.prompt.name,
                "prompt_hash": self.prompt.hash, "model": dict(self.lm.describe())}

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "ICLAdapted":
        return ICLAdapted(self, tuple(support), tuple(labels))


@dataclass(frozen=True)
class ICLAdapted:
    learner: ICL
    demos: tuple[Example, ...]
    labels: tuple[str, ...]

    def _render(self, query: Example) -> Rendered:
        p = self.learner.prompt
        if self.learner.chat:
            tok = getattr(self.learner.lm, "tokenizer")
            apply = lambda msgs: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # noqa: E731
            return p.render_chat(self.demos, query, self.labels, apply)
        return p.render(self.demos, query, self.labels)

    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        rendered = [self._render(q) for q in queries]
        if not self.labels:
            return self._generate(queries, rendered)
        requests = [LoglikelihoodRequest(r.prefix, r.context, r.continuations[lab])
                    for r in rendered for lab in self.labels]
        results = self.learner.lm.loglikelihood(requests)
        out = []
        n = len(self.labels)
        for qi, query in enumerate(queries):
            res = results[qi * n:(qi + 1) * n]
            logprobs = {lab: r.logprob for lab, r in zip(self.labels, res)}
            scores = logprobs if self.learner.normalize == "sum" else {
                lab: r.logprob / r.n_tokens for lab, r in zip(self.labels, res)}
            mass = sum(math.exp(v) for v in logprobs.values())
            out.append(classification_prediction(query, self.labels, scores, {"label_mass": mass}))
        return out

    def _generate(self, queries: Sequence[Example], rendered: Sequence[Rendered]) -> list[Prediction]:
        stop = self.learner.prompt.stop
        reqs = [GenerationRequest(r.prefix, r.context, self.learner.max_new_tokens, stop) for r in rendered]
        texts = self.learner.lm.generate(reqs)
        out = []
        for q, r, text in zip(queries, rendered, texts):
            answer = text.strip()
            gold = r.target.strip()
            out.append(Prediction(query_id=q.id, gold=gold, predicted=answer,
                                  correct=answer.casefold() == gold.casefold(), extra={"generation": text}))
        return out


def _factory(ctx: "MethodContext") -> ICL:
    assert ctx.get_lm is not None and ctx.get_prompt is not None
    return ICL(lm=ctx.get_lm(), prompt=ctx.get_prompt(), normalize=ctx.options.get("normalize", "sum"),
               chat=bool(ctx.options.get("chat", False)))


from . import register  # noqa: E402 - registration needs the class above
from .base import MethodContext  # noqa: E402

register("icl")(_factory)
