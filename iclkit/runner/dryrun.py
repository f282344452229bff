"""``iclkit run ... --dry-run``: what a run will do and cost, found without scoring anything and without writing.

The plan is drawn as a run draws it (``iclkit.runner.plan``) and every learner is built as a run builds it, so a
configuration that would fail fails here too. Each prompted learner then runs its jobs through the runner's own
loop (``run_method``) against a model that answers without running (``Scoreless``), behind the meter a real run
reports from (``iclkit.runner.usage``): the requests and tokens counted are those of the calls the run will make.
Learners that are not prompted are not run: their cost is the texts they embed and their meta-training. A few of
the recorded calls are then scored for real to measure this machine's speed (``iclkit.runner.estimate``).

Nothing is written: no run folder, no checkpoint, no score cache. The one exception is ``--demos similar``, whose
learner embeds texts to choose demonstrations: those vectors enter the embedding cache, as the run's would.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from iclkit import learners
from iclkit.embeddings import text_of
from iclkit.errors import IclkitError
from iclkit.lm.base import GenerationRequest, Loglikelihood, LoglikelihoodRequest
from iclkit.metatrain import is_validation
from iclkit.runner.config import RunConfig
from iclkit.runner.estimate import embedding_rate, generation_rate, scoring_rate
from iclkit.runner.cost import DryRun, JobCost, MetaCost
from iclkit.runner.execute import TrainSets, build_learners, meta_trains, run_method, usage_bucket
from iclkit.runner.model import ModelHandle
from iclkit.runner.plan import RunPlan, plan
from iclkit.runner.usage import Meter, MeteredLM, Usage
from iclkit.types import Episode


class Scoreless:
    """``lm`` answering every request without running it (log-prob 0 over one token; empty generations), keeping
    each call's requests so a few can be timed for real. A prompt longer than the context window fails as it would
    in the run. Tokenizer, chat template, hidden states and the rest are ``lm``'s own."""

    def __init__(self, lm: Any):
        self.lm = lm
        self.loglikelihood_calls: list[list[LoglikelihoodRequest]] = []
        self.generation_calls: list[list[GenerationRequest]] = []

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """A placeholder result per request; the call's requests are kept."""
        self._check(self.lm.token_counts(requests))
        self.loglikelihood_calls.append(list(requests))
        return [Loglikelihood(0.0, 1, False) for _ in requests]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """An empty answer per request; the call's requests are kept."""
        prompts = self.lm.token_counts([LoglikelihoodRequest(r.prefix, r.context, "") for r in requests])
        self._check([n + r.max_new_tokens for n, r in zip(prompts, requests)])
        self.generation_calls.append(list(requests))
        return ["" for _ in requests]

    def _check(self, lengths: Sequence[int]) -> None:
        window = self.lm.context_length
        if window and lengths and max(lengths) > window:
            raise IclkitError(f"prompt is {max(lengths)} tokens, longer than the model's context window of {window} "
                              "tokens", field="shots",
                              hint="use fewer shots, shorter demonstrations, or a model with a longer context")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "lm" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.lm, name)


def dry_run(config: RunConfig, *, measure: bool = True) -> DryRun:
    """Plan ``config``, count what its run would ask of the model, and (``measure``) time a few of those calls."""
    model = ModelHandle(config.model)  # no score cache: a dry run reads none and writes none
    start = time.perf_counter()
    planned = plan(config, model=model)
    planning_s = time.perf_counter() - start
    meter, wrapped, load_s = Meter(), [], [None]

    def get_lm() -> MeteredLM:
        if not wrapped:
            if not model.loaded:
                began = time.perf_counter()
                model()
                load_s[0] = time.perf_counter() - began
            wrapped.append(MeteredLM(Scoreless(model.lm), meter, model.backend))
        return wrapped[0]

    embeddings: dict[str, Any] = {}
    train_sets = TrainSets(planned)
    built = build_learners(planned, get_lm, train_sets, progress=False, embeddings=embeddings)
    per_call = None
    for index, (lp, learner) in enumerate(zip(planned.learners, built)):
        caps = learners.entry(lp.method).capabilities
        if meta_trains(lp, learner):
            train_sets(lp.task.name)
            continue
        if not caps.prompted:
            continue
        per_call = learner.episodes_per_call() if caps.batches_episodes else 1
        for job in (j for j in planned.jobs if j.learner == index):
            meter.bucket = usage_bucket(job.task, job.method, job.prompt)
            run_method(learner, job.episodes, progress=False, per_call=per_call, outputs=lp.outputs, info=job.info,
                       meter=meter)
    texts = _texts_to_embed(planned, built, train_sets)
    cache = next(iter(embeddings.values()), None) if texts else None
    missing = cache.missing(texts) if cache is not None else []
    scoreless: Scoreless | None = wrapped[0].lm if wrapped else None
    dry = DryRun(planned, _job_costs(planned, meter), _meta_costs(planned, built, train_sets),
                 cache.encoder.description if cache is not None else None, len(dict.fromkeys(texts)), len(missing),
                 dict(model.lm.describe()) if model.loaded else None, per_call, planning_s, load_s[0])
    if not measure:
        return dry
    calls = scoreless.loglikelihood_calls if scoreless is not None else []
    generations = scoreless.generation_calls if scoreless is not None else []
    return DryRun(**{**vars(dry),
                     "scoring": scoring_rate(model.backend, calls, shared=dry.shared) if calls else None,
                     "generation": generation_rate(model.backend, generations) if generations else None,
                     "embedding": embedding_rate(cache.encoder, missing) if cache is not None and missing else None})


def _job_costs(planned: RunPlan, meter: Meter) -> tuple[JobCost, ...]:
    """One row per task × method × prompt, in plan order."""
    rows: dict[str, list[Any]] = {}
    for job in planned.jobs:
        bucket = usage_bucket(job.task, job.method, job.prompt)
        row = rows.setdefault(bucket, [job, set(), 0, 0])
        row[1].update(e.id for e in job.episodes)
        row[2] += len(job.episodes)
        row[3] += job.queries
    return tuple(JobCost(job.task, job.method, planned.learners[job.learner].outputs, job.prompt, len(ids), runs,
                         queries, meter.totals.get(bucket, Usage()))
                 for bucket, (job, ids, runs, queries) in rows.items())


def _meta_costs(planned: RunPlan, built: Sequence[Any], train_sets: TrainSets) -> tuple[MetaCost, ...]:
    """Per task, the meta-training episodes and the learners that train on them."""
    by_task: dict[str, list[str]] = {}
    for lp, learner in zip(planned.learners, built):
        if meta_trains(lp, learner) and lp.method not in by_task.setdefault(lp.task.name, []):
            by_task[lp.task.name].append(lp.method)
    out = []
    for task, methods in by_task.items():
        if not methods:
            continue
        eps = train_sets(task)
        protocol = planned.protocols[task]
        out.append(MetaCost(task, protocol.protocol if protocol is not None else "in-task", len(eps),
                            sum(is_validation(e) for e in eps), tuple(methods)))
    return tuple(out)


def _texts_to_embed(planned: RunPlan, built: Sequence[Any], train_sets: TrainSets) -> list[str]:
    """The texts the run's embedding space would embed: the episodes' texts for every learner that is not
    prompted (the baselines read frozen embeddings) or that picks demonstrations by similarity, and the
    meta-training texts of every meta-learner."""
    texts: list[str] = []
    for lp, learner in zip(planned.learners, built):
        entry = learners.entry(lp.method)
        spec = entry.options
        similar = spec is not None and "demos" in spec.names() and spec.value("demos", planned.config.options) == \
            "similar"
        episodes: list[Episode] = list(lp.episodes) if not entry.capabilities.prompted or similar else []
        if meta_trains(lp, learner):
            episodes += train_sets(lp.task.name)
        texts += [text_of(e) for ep in episodes for e in (*ep.support, *ep.query)]
    return list(dict.fromkeys(texts))
