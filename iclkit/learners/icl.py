"""In-context learning: rank classification over verbalizers, or greedy generation for open answers.

One ``ICL`` instance scores an episode's (query, label) requests once and derives every requested output from those
scores: raw ``icl`` and its calibrated variants ``icl+contextual``, ``icl+dcpmi`` and ``icl+batch``
(``iclkit.learners.calibration``), which add only a few short requests per episode. ``demos`` chooses which of the
support examples each query's prompt shows, and in what order (``iclkit.learners.demos``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.lm.base import LM, GenerationRequest, Loglikelihood, LoglikelihoodRequest
from iclkit.prompts import PromptTemplate, Rendered, template_fields
from iclkit.types import Example, Prediction
from iclkit.learners import calibration as cal
from iclkit.learners.base import Capabilities, EpisodeInput, MethodContext, classification_prediction
from iclkit.learners.demos import DemoChoice, interleaved, similar
from iclkit.learners.options import FeatureOptions, OptionSpec
from iclkit.learners.registry import register

Normalize = Literal["sum", "mean"]
Embed = Callable[[Sequence[Example]], Any]  # examples → [n, dim] tensor, through the run's embedding cache
NAME = "icl"


def output_name(calibration: cal.Calibration, base: str = NAME) -> str:
    """The method name of a calibration's output: ``icl`` (none), ``icl+contextual``, ..."""
    return base if calibration == "none" else f"{base}+{calibration}"


def calibration_of(name: str, base: str = NAME) -> cal.Calibration:
    """The calibration an output name stands for (inverse of ``output_name``)."""
    for c in cal.CALIBRATIONS:
        if output_name(c, base) == name:
            return c
    raise IclkitError(f"{name!r} is not an output of {base}", field="calibration",
                      hint=f"one of {', '.join(output_name(c, base) for c in cal.CALIBRATIONS)}")


def _rounded(scores: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in scores.items()}


@dataclass(frozen=True)
class ICL:
    """k-shot prompting of a causal LM. ``normalize='mean'`` divides each label's log-prob by its token count.

    ``calibrations``: the outputs one pass yields (``none`` = raw scores). ``demos`` / ``demos_per_query``: which
    support examples each query's prompt shows (``embed`` gives the vectors for ``similar``). ``content_free``: the
    inputs contextual calibration scores with each prompt's demonstrations."""

    lm: LM
    prompt: PromptTemplate
    normalize: Normalize = "sum"
    chat: bool = False
    max_new_tokens: int = 8
    episode_batch: int = 0  # episodes per LM call in a run; 0: automatic (see episodes_per_call)
    demos: DemoChoice = "random"
    demos_per_query: int = 0  # with demos='similar': keep the M most similar support examples (0: all)
    calibrations: tuple[cal.Calibration, ...] = ("none",)
    content_free: tuple[str, ...] = cal.DEFAULT_CONTENT_FREE
    embed: Embed | None = None
    name: str = NAME

    def __post_init__(self) -> None:
        check_shared_context(self.calibrations, self.demos)

    def outputs(self) -> tuple[str, ...]:
        """The method names this instance produces, in the order of ``calibrations``."""
        return tuple(output_name(c, self.name) for c in self.calibrations)

    def describe(self) -> Mapping[str, Any]:
        model = dict(self.lm.describe())
        out = {"method": self.name, "backbone": str(model.get("model")), "normalize": self.normalize,
               "chat": self.chat, "prompt": self.prompt.name, "prompt_hash": self.prompt.hash, "model": model,
               "demos": self.demos}
        if self.demos == "similar":
            out["demos_per_query"] = self.demos_per_query
        if "contextual" in self.calibrations:
            out["content_free"] = list(self.content_free)
        if "dcpmi" in self.calibrations:
            out["domain_premise"] = self.prompt.premise()
        return out

    def describe_output(self, name: str) -> Mapping[str, Any]:
        """``describe()`` for one output, with its calibration (and for a calibrated one: the raw output it is
        paired with, the paper, and whether it is transductive)."""
        c = calibration_of(name, self.name)
        out = {**self.describe(), "method": name, "calibration": c}
        if c != "none":
            out.update(raw_method=self.name, paper=cal.PAPERS[c], transductive=c in cal.TRANSDUCTIVE)
        return out

    def adapt(self, support: Sequence[Example], labels: Sequence[str]) -> "ICLAdapted":
        vectors = self.embed(support) if self.demos == "similar" and support and self.embed is not None else None
        return ICLAdapted(self, tuple(support), tuple(labels), vectors)

    def predict_outputs(self, episodes: Sequence[EpisodeInput]) -> list[dict[str, list[Prediction]]]:
        """Every output for several episodes, from one LM call holding all their requests (each distinct request
        once), so the LM can batch queries of different episodes together, each continuing its own cached
        demonstrations. Same predictions as one episode at a time."""
        adapted = [(self.adapt(s, labels), tuple(q)) for s, labels, q in episodes]
        scorings = [a.scoring(q) if a.labels else None for a, q in adapted]
        unique: dict[LoglikelihoodRequest, int] = {}
        for sc in scorings:
            for r in sc.requests if sc is not None else ():
                unique.setdefault(r, len(unique))
        results = self.lm.loglikelihood(list(unique)) if unique else []
        # Open-answer episodes: every episode's generation requests in one call as well (decoded together)
        generations = [a.generation(q) if sc is None else ([], []) for (a, q), sc in zip(adapted, scorings)]
        flat = [r for reqs, _ in generations for r in reqs]
        texts = iter(self.lm.generate(flat) if flat else [])
        out = []
        for (a, q), sc, (reqs, golds) in zip(adapted, scorings, generations):
            if sc is None:
                out.append({self.name: a.answers(q, golds, [next(texts) for _ in reqs])})
            else:
                out.append(a.finish(sc, [results[unique[r]] for r in sc.requests]))
        return out

    def predict_episodes(self, episodes: Sequence[EpisodeInput]) -> list[list[Prediction]]:
        """``adapt(support, labels).predict(queries)`` for several episodes in one LM call (the first output)."""
        return [next(iter(o.values())) for o in self.predict_outputs(episodes)]

    def episodes_per_call(self) -> int:
        """How many episodes the runner hands to ``predict_outputs`` at once: on a GPU 16, enough to fill its
        batches; on a CPU 4: an episode's scoring rows already fill a CPU batch (and are scored alone), but a decoding
        step of 64 rows costs about twice one of 16, not four times (it reads every weight), so open-answer episodes
        decode together. Predictions do not depend on it (tests)."""
        return self.episode_batch or (16 if self.lm.device.startswith("cuda") else 4)


def premise_prompt(prompt: PromptTemplate) -> PromptTemplate:
    """``prompt`` with its domain premise as the whole example template and no instruction: rendered with no
    demonstrations it gives the premise in the query's place, in the same surface form as a query (the same target
    spacing, and under ``--chat`` the same chat wrapper), as DC-PMI compares the two (Holtzman et al. 2021)."""
    literal = prompt.premise().replace("{", "{{").replace("}", "}}")
    return replace(prompt, template=literal, instruction="")


@dataclass(frozen=True)
class Scoring:
    """One episode's requests in one list: (query, label) query-major; then, for contextual calibration, per
    distinct prompt prefix (``cf_prefixes``) and content-free input, one per label (same prefix string as the
    queries, so the LM continues the same cached demonstrations, and the content-free text in the query's fields);
    then, for DC-PMI, one per label after the domain premise alone, rendered as a query would be
    (``premise_prompt``). ``extra_tokens``: prefix tokens scored beyond one shared prefix (None with
    ``demos='random'``)."""

    queries: tuple[Example, ...]
    prefixes: tuple[str, ...]  # each query's prompt prefix
    requests: tuple[LoglikelihoodRequest, ...]
    cf_prefixes: tuple[str, ...]
    cf_at: int
    domain_at: int
    extra_tokens: int | None


@dataclass(frozen=True)
class ICLAdapted:
    learner: ICL
    demos: tuple[Example, ...]
    labels: tuple[str, ...]
    vectors: Any = None  # support embeddings (demos='similar')

    def demos_for(self, queries: Sequence[Example]) -> list[tuple[Example, ...]]:
        """Each query's demonstrations, in prompt order (``iclkit.learners.demos``)."""
        choice = self.learner.demos
        if not self.demos or choice == "random":
            return [self.demos] * len(queries)
        if choice == "interleaved":
            return [interleaved(self.demos, self.labels, q) for q in queries]
        assert self.learner.embed is not None, "demos='similar' needs an embedder"
        qv = self.learner.embed(queries)
        return [similar(self.demos, self.vectors, qv[i], self.learner.demos_per_query) for i in range(len(queries))]

    def _render(self, demos: Sequence[Example], query: Example, prompt: PromptTemplate | None = None) -> Rendered:
        p = prompt or self.learner.prompt
        if self.learner.chat:
            return p.render_chat(demos, query, self.labels, self.learner.lm.apply_chat_template)
        return p.render(demos, query, self.labels)

    def _requests(self, r: Rendered) -> list[LoglikelihoodRequest]:
        return [LoglikelihoodRequest(r.prefix, r.context, r.continuations[lab]) for lab in self.labels]

    def predict(self, queries: Sequence[Example]) -> list[Prediction]:
        """The first output's predictions (raw ICL unless the learner was built for calibrated outputs only)."""
        if not self.labels:
            return self.generate(queries)
        sc = self.scoring(queries)
        return next(iter(self.finish(sc, self.learner.lm.loglikelihood(sc.requests)).values()))

    def scoring(self, queries: Sequence[Example]) -> Scoring:
        """Every request this episode's outputs need (see ``Scoring``)."""
        ln = self.learner
        demo_sets = self.demos_for(queries)
        rendered = [self._render(d, q) for d, q in zip(demo_sets, queries)]
        reqs = [req for r in rendered for req in self._requests(r)]
        cf_at = len(reqs)
        by_prefix: dict[str, tuple[Example, ...]] = {}
        for d, r in zip(demo_sets, rendered):
            by_prefix.setdefault(r.prefix, d)
        cf_prefixes: tuple[str, ...] = ()
        if "contextual" in ln.calibrations and queries:
            cf_prefixes = tuple(by_prefix)
            fields = template_fields(ln.prompt.template)
            for prefix, d in by_prefix.items():
                for text in ln.content_free:
                    reqs += self._requests(self._render(d, Example("content-free", {f: text for f in fields},
                                                                   self.labels[0])))
        domain_at = len(reqs)
        if "dcpmi" in ln.calibrations and queries:
            reqs += self._requests(self._render((), Example("domain-premise", {}, self.labels[0]),
                                                premise_prompt(ln.prompt)))
        extra = None
        if ln.demos != "random" and queries and self.demos:
            shared = self._render(self.demos, queries[0]).prefix
            extra = sum(len(ln.lm.tokenize(p)) for p in by_prefix) - len(ln.lm.tokenize(shared))
        return Scoring(tuple(queries), tuple(r.prefix for r in rendered), tuple(reqs), cf_prefixes, cf_at, domain_at,
                       extra)

    def _score(self, r: Loglikelihood) -> float:
        return r.logprob if self.learner.normalize == "sum" else r.logprob / r.n_tokens

    def finish(self, sc: Scoring, results: Sequence[Loglikelihood]) -> dict[str, list[Prediction]]:
        """Output name → predictions, from the results of ``sc.requests``; records keep each calibrated output's
        scores as ``scores`` and the raw ones as ``raw_scores``. A transductive output (batch calibration) depends
        on every query of the episode; the others on the query alone."""
        ln, labels, n = self.learner, self.labels, len(self.labels)
        rows = [results[qi * n:(qi + 1) * n] for qi in range(len(sc.queries))]
        scores = [{lab: self._score(r) for lab, r in zip(labels, row)} for row in rows]
        logprobs = [{lab: r.logprob for lab, r in zip(labels, row)} for row in rows]
        base = [{"label_mass": sum(math.exp(v) for v in lp.values()),
                 **({"extra_prompt_tokens": sc.extra_tokens} if sc.extra_tokens is not None else {})}
                for lp in logprobs]
        out: dict[str, list[Prediction]] = {}
        for c in ln.calibrations:
            if c == "none":
                preds = [classification_prediction(q, labels, s, b) for q, s, b in zip(sc.queries, scores, base)]
            elif c == "contextual":
                size = len(ln.content_free) * n
                p_cf = {}
                for i, prefix in enumerate(sc.cf_prefixes):
                    block = results[sc.cf_at + i * size: sc.cf_at + (i + 1) * size]
                    tables = [{lab: self._score(r) for lab, r in zip(labels, block[j:j + n])}
                              for j in range(0, size, n)]
                    p_cf[prefix] = cal.content_free_prior(tables)
                preds = [classification_prediction(q, labels, cal.divide(s, p_cf[pre]),
                                                   {**b, "raw_scores": _rounded(s), "p_cf": _rounded(p_cf[pre])})
                         for q, s, b, pre in zip(sc.queries, scores, base, sc.prefixes)]
            elif c == "dcpmi":
                domain = {lab: r.logprob for lab, r in zip(labels, results[sc.domain_at:sc.domain_at + n])}
                preds = [classification_prediction(q, labels, cal.dcpmi(lp, domain),
                                                   {**b, "raw_scores": _rounded(s), "domain_logprob": _rounded(domain)})
                         for q, s, lp, b in zip(sc.queries, scores, logprobs, base)]
            else:  # batch
                prior = cal.mean_probs(scores) if scores else {}
                preds = [classification_prediction(q, labels, cs,
                                                   {**b, "raw_scores": _rounded(s), "batch_prior": _rounded(prior)})
                         for q, s, cs, b in zip(sc.queries, scores, cal.batch(scores), base)]
            out[output_name(c, ln.name)] = preds
        return out

    def generate(self, queries: Sequence[Example]) -> list[Prediction]:
        """Greedy answers for an open-answer episode."""
        requests, golds = self.generation(queries)
        return self.answers(queries, golds, self.learner.lm.generate(requests))

    def generation(self, queries: Sequence[Example]) -> tuple[list[GenerationRequest], list[str]]:
        """One greedy-decoding request per query (its prompt after its demonstrations, up to the prompt's stop), and
        each query's gold answer as the prompt renders it."""
        rendered = [self._render(d, q) for d, q in zip(self.demos_for(queries), queries)]
        stop = self.learner.prompt.stop
        return ([GenerationRequest(r.prefix, r.context, self.learner.max_new_tokens, stop) for r in rendered],
                [r.target.strip() for r in rendered])

    @staticmethod
    def answers(queries: Sequence[Example], golds: Sequence[str], texts: Sequence[str]) -> list[Prediction]:
        """Predictions from the generated ``texts``: correct when the stripped text equals the gold, ignoring case."""
        out = []
        for q, gold, text in zip(queries, golds, texts):
            answer = text.strip()
            out.append(Prediction(query_id=q.id, gold=gold, predicted=answer,
                                  correct=answer.casefold() == gold.casefold(), extra={"generation": text}))
        return out


@dataclass(frozen=True)
class CachedEmbed:
    """Examples → vectors through one of the run's embedding caches (each text embedded at most once per run)."""

    cache: Any  # iclkit.embeddings.EmbeddingCache

    def __call__(self, examples: Sequence[Example]) -> Any:
        from iclkit.embeddings import text_of

        return self.cache.embed([text_of(e) for e in examples])


def _embedder(ctx: MethodContext) -> CachedEmbed:
    """The run's embedding space for KATE, checked on one text now, so a bad ``--embed`` fails before the run."""
    from iclkit.embeddings import cache_for, encoder_for, text_of

    o = ctx.run_wide(FeatureOptions)
    hint = "--demos similar ranks demonstrations by embedding: use --embed lm, minilm, or a local encoder folder"
    try:
        encoder = encoder_for(o.embed, get_lm=ctx.get_lm, layer=o.embed_layer, pooling=o.pooling)
        cache = cache_for(encoder, ctx.embeddings, progress=ctx.progress)
        probe = list(ctx.task.train[:1]) if ctx.task is not None else []
        cache.embed([text_of(e) for e in probe])
    except IclkitError as e:
        raise IclkitError(f"no usable embedder (--embed {o.embed!r}): {e.message}", field="demos", hint=hint) from None
    except (OSError, ValueError, RuntimeError) as e:
        raise IclkitError(f"no usable embedder (--embed {o.embed!r}): {type(e).__name__}: {e}".splitlines()[0],
                          field="demos", hint=hint) from None
    return CachedEmbed(cache)


def check_shared_context(calibrations: Sequence[str], demos: str) -> None:
    """Refuse batch calibration with per-query demonstrations: Zhou et al.'s prior is one mean over queries that
    share one context; with ``similar``/``interleaved`` demonstrations it would mix contexts (and a mean over the
    queries of one prompt is, with ``similar``, one query's own probabilities: every calibrated score 0)."""
    shared = [c for c in calibrations if c in cal.SHARED_CONTEXT]
    if shared and demos != "random":
        raise IclkitError(f"--calibration {shared[0]} estimates one label prior per episode from queries that share "
                          f"one prompt, but --demos {demos} gives each query its own demonstrations",
                          field="demos", hint=f"use --demos random with --calibration {shared[0]}, or leave "
                                              f"{shared[0]} out (contextual calibration estimates its prior per "
                                              "prompt)")


def _check(ctx: MethodContext, prompt: PromptTemplate, calibrations: Sequence[str], demos: str,
           demos_per_query: int) -> None:
    """Options no episode of the run can satisfy, refused before anything runs (and before the model loads)."""
    m = demos_per_query
    if m < 0:
        raise IclkitError(f"must be ≥ 0 (0: all of the support), got {m}", field="demos_per_query")
    if m and demos != "similar":
        raise IclkitError("applies to --demos similar only", field="demos_per_query")
    sizes = [len(ep.support) for ep in ctx.episodes if ep.support]
    if m and sizes and m > min(sizes):
        raise IclkitError(f"{m} demonstrations per query, but the smallest support set of the run holds {min(sizes)}",
                          field="demos_per_query", hint="every method sees the same support set; ask for at most "
                                                        "its size, or for more shots")
    check_shared_context(calibrations, demos)
    if "dcpmi" in calibrations and not prompt.premise().strip():
        raise IclkitError(f"prompt {prompt.name!r} has no answer cue after its last field, so DC-PMI has no domain "
                          "premise", file=prompt.file, field="domain_premise",
                          hint="set domain_premise: in the prompt file (e.g. 'Sentiment:')")


def _factory(own: cal.Calibration) -> Callable[[MethodContext], ICL]:
    def make(ctx: MethodContext) -> ICL:
        assert ctx.get_lm is not None and ctx.get_prompt is not None
        calibrations = tuple(calibration_of(name) for name in ctx.outputs) or (own,)
        options = ctx.learner_options(OPTIONS)
        prompt = ctx.get_prompt()
        _check(ctx, prompt, calibrations, options.get("demos", ICL.demos), options.get("demos_per_query", 0))
        embed = _embedder(ctx) if options.get("demos", ICL.demos) == "similar" else None
        spec = getattr(ctx.task, "spec", None)
        content_free = getattr(spec, "content_free", None) or cal.DEFAULT_CONTENT_FREE
        return ICL(lm=ctx.get_lm(), prompt=prompt, calibrations=calibrations, content_free=content_free,
                   embed=embed, **options)

    return make


OPTIONS = OptionSpec(ICL, ("normalize", "chat", "max_new_tokens", "episode_batch", "demos", "demos_per_query"))
VARIANTS = tuple(output_name(c) for c in cal.CALIBRATIONS)

# One registration per output: each can be asked for alone (``--methods icl+batch``); asked for together, the runner
# builds one instance for all of them (``variants``). Calibrated outputs need a label set: no open answers.
for _c in cal.CALIBRATIONS:
    register(output_name(_c), options=OPTIONS, capabilities=Capabilities(
        min_shots=0, open_answers=_c == "none", batches_episodes=True,
        query_fields=("label_mass", "extra_prompt_tokens"), variants=VARIANTS, prompted=True,
        order_sensitive=True))(_factory(_c))
