"""In-context learning: rank classification over verbalizers, or greedy generation for open answers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from iclkit.lm.base import LM, GenerationRequest, LoglikelihoodRequest
from iclkit.prompts import PromptTemplate, Rendered
from iclkit.types import Example, Prediction
from iclkit.learners.base import Capabilities, MethodContext, classification_prediction
from iclkit.learners.options import OptionSpec
from iclkit.learners.registry import register

Normalize = Literal["sum", "mean"]


@dataclass(frozen=True)
class ICL:
    """k-shot prompting of a causal LM. ``normalize='mean'`` divides each label's log-prob by its token count."""

    lm: LM
    prompt: PromptTemplate
    normalize: Normalize = "sum"
    chat: bool = False
    max_new_tokens: int = 8
    episode_batch: int = 0  # episodes per LM call in a run; 0: automatic (see episodes_per_call)
    name: str = "icl"

    def describe(self) -> Mapping[str, Any]:
        model = dict(self.lm.describe())
        return {"method": self.name, "backbone": str(model.get("model")), "normalize": self.normalize,
                "chat": self.chat, "prompt": self.prompt.name, "prompt_hash": self.prompt.hash, "model": model}

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "ICLAdapted":
        return ICLAdapted(self, tuple(support), tuple(labels))

    def predict_episodes(self, episodes: Sequence[tuple[Sequence[Example], Sequence[str], Sequence[Example]]]
                         ) -> list[list[Prediction]]:
        """``adapt(support, labels).predict(queries)`` for several episodes, with all their scoring requests in one
        LM call, so the LM can batch queries of different episodes together (each continuing its own cached
        demonstrations). Same predictions as one episode at a time."""
        adapted = [(self.adapt(s, labels), queries) for s, labels, queries in episodes]
        batched = [(a, q, a.requests(q)) for a, q in adapted if a.labels]
        results = iter(self.lm.loglikelihood([r for _, _, reqs in batched for r in reqs]) if batched else [])
        out = []
        for a, q in adapted:
            out.append(a.finish(q, [next(results) for _ in range(len(q) * len(a.labels))]) if a.labels
                       else a.predict(q))
        return out

    def episodes_per_call(self) -> int:
        """How many episodes the runner hands to ``predict_episodes`` at once: on a GPU enough to fill its batches;
        on a CPU one (an episode's queries already fill a CPU batch)."""
        return self.episode_batch or (16 if self.lm.device.startswith("cuda") else 1)


@dataclass(frozen=True)
class ICLAdapted:
    learner: ICL
    demos: tuple[Example, ...]
    labels: tuple[str, ...]

    def _render(self, query: Example) -> Rendered:
        p = self.learner.prompt
        if self.learner.chat:
            return p.render_chat(self.demos, query, self.labels, self.learner.lm.apply_chat_template)
        return p.render(self.demos, query, self.labels)

    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        if not self.labels:
            return self._generate(queries, [self._render(q) for q in queries])
        return self.finish(queries, self.learner.lm.loglikelihood(self.requests(queries)))

    def requests(self, queries: Sequence[Example]) -> list[LoglikelihoodRequest]:
        """One request per (query, label), query-major."""
        rendered = [self._render(q) for q in queries]
        return [LoglikelihoodRequest(r.prefix, r.context, r.continuations[lab]) for r in rendered for lab in self.labels]

    def finish(self, queries: Sequence[Example], results: Sequence[Any]) -> list[Prediction]:
        """Predictions from the results of ``requests(queries)``."""
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


OPTIONS = OptionSpec(ICL, ("normalize", "chat", "max_new_tokens", "episode_batch"))
CAPABILITIES = Capabilities(min_shots=0, open_answers=True, batches_episodes=True, query_fields=("label_mass",))


@register("icl", capabilities=CAPABILITIES, options=OPTIONS)
def _make(ctx: MethodContext) -> ICL:
    assert ctx.get_lm is not None and ctx.get_prompt is not None
    return ICL(lm=ctx.get_lm(), prompt=ctx.get_prompt(), **ctx.learner_options(OPTIONS))
