"""Stage 2 of a run: ``execute(plan) → Executed``, every job of a ``RunPlan`` run, with checkpoints and sharding.

Every learner is built before any episode runs (so an option no episode can satisfy fails with nothing written),
then each is meta-trained if it meta-trains, described, and run on its jobs: Learner.adapt(support) →
predict(query) → EpisodeResult. The loop knows learners only through their registry entry: capabilities (several
episodes per call, order sensitivity) and whether they are meta-learners; no method is special-cased by name.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tqdm.auto import tqdm

from iclkit import learners
from iclkit.errors import IclkitError
from iclkit.metatrain import training_episodes
from iclkit.protocols import budget_fields
from iclkit.runner import distributed
from iclkit.runner.checkpoint import Checkpoint, config_key, info_key
from iclkit.runner.plan import LearnerPlan, RunPlan
from iclkit.runner.usage import Meter, MeteredLM, Usage
from iclkit.types import Episode, EpisodeResult, episodes_hash


@dataclass(frozen=True)
class Executed:
    """What running a plan produced: every result (in the order of the plan's jobs, whatever the number of
    processes), each method's description, the meta-training episodes' hashes, the data budgets, what the model
    was (None if never loaded), and the LM usage per job bucket (``usage_bucket``) over all processes."""

    results: tuple[EpisodeResult, ...]
    described: Mapping[str, dict[str, Any]]
    meta_hashes: Mapping[str, str]
    budgets: Mapping[tuple[str, str], dict[str, Any]]
    model: Mapping[str, Any] | None
    processes: int
    main: bool  # this process writes the run folder (rank 0)
    usage: Mapping[str, Usage] = field(default_factory=dict)


def usage_bucket(task: str, method: str, prompt: str | None) -> str:
    """The key LM usage is counted under: task, the method that built the learner, and its prompt."""
    return "/".join([task, method, *([prompt] if prompt is not None else [])])


class TrainSets:
    """Meta-training episodes per task: the plan's, and drawn once on demand for a learner that did not declare it
    meta-trains; one list per task, shared by its meta-learners."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        self.sets: dict[str, list[Episode]] = {name: list(eps) for name, eps in plan.train_episodes.items()}

    def __call__(self, task: str) -> list[Episode]:
        if task not in self.sets:
            p = self.plan
            self.sets[task] = training_episodes(p.task(task), list(p.episodes[task]), p.meta_options,
                                                p.config.episodes.seed, p.protocols[task])
        return self.sets[task]


def build_learners(plan: RunPlan, get_lm: Callable[[], Any], train_sets: TrainSets, *, progress: bool,
                   embeddings: dict[str, Any]) -> list[Any]:
    """Every learner of ``plan``, in order, built by its registry entry; ``embeddings``: the run's embedding caches,
    shared by its baselines."""
    built = []
    for lp in plan.learners:
        ctx = learners.MethodContext(
            task=lp.task, seed=plan.config.episodes.seed, options=plan.config.options, get_lm=get_lm,
            get_prompt=lambda p=lp.prompt: p, train_episodes=lambda t=lp.task.name: train_sets(t),
            embeddings=embeddings, progress=progress, outputs=lp.outputs, episodes=lp.episodes)
        built.append(learners.make(lp.method, ctx))
    return built


def metered(plan: RunPlan, meter: Meter) -> Callable[[], MeteredLM]:
    """``get_lm`` for the learners: the plan's model, loaded on first use, every call of it counted into ``meter``."""
    wrapped: list[MeteredLM] = []

    def get_lm() -> MeteredLM:
        if not wrapped:
            lm = plan.model()
            wrapped.append(MeteredLM(lm, meter, plan.model.backend))
        return wrapped[0]

    return get_lm


def meta_trains(lp: LearnerPlan, learner: Any) -> bool:
    """Whether ``learner`` meta-trains: as its registration declares, else whether it is a MetaLearner."""
    declared = learners.entry(lp.method).capabilities.meta_trains
    return declared if declared is not None else isinstance(learner, learners.MetaLearner)


def execute(plan: RunPlan, out: str | Path | None = None, *, progress: bool = True) -> Executed:
    """Run every job of ``plan``. With ``out``, finished episodes are checkpointed beside it, so a killed run
    started again with the same config resumes where it stopped. Under ``accelerate launch`` / ``torchrun`` this
    process runs every world-size-th episode of each job, and the results are gathered back in plan order."""
    config = plan.config
    world = distributed.init()
    progress = progress and world.main
    ckpt = Checkpoint(out, config_key(config.to_dict())) if out is not None and world.main else None
    meter = Meter()
    train_sets = TrainSets(plan)
    built = build_learners(plan, metered(plan, meter), train_sets, progress=progress, embeddings={})
    for lp, learner in zip(plan.learners, built):  # undeclared meta-learners: their sources too, before any episode
        if meta_trains(lp, learner):
            train_sets(lp.task.name)
    described: dict[str, dict[str, Any]] = {}
    meta_hashes: dict[str, str] = {}
    budgets: dict[tuple[str, str], dict[str, Any]] = {}
    blocks: list[list[EpisodeResult]] = []
    for index, (lp, learner) in enumerate(zip(plan.learners, built)):
        task = lp.task.name
        if meta_trains(lp, learner):
            train = train_sets(task)
            learner.meta_train(train)
            meta_hashes[f"{task}/{lp.method}"] = episodes_hash(train)
        _describe(lp, learner, plan, described, budgets)
        caps = learners.entry(lp.method).capabilities
        per_call = learner.episodes_per_call() if caps.batches_episodes else 1
        for job in (j for j in plan.jobs if j.learner == index):
            meter.bucket = usage_bucket(task, lp.method, job.prompt)
            meter.take()  # calls outside the runner's own (none today) are not filed under a checkpointed call
            blocks.append(run_method(learner, distributed.shard(job.episodes, world), progress=progress,
                                     desc=job.desc, checkpoint=ckpt, per_call=per_call, outputs=lp.outputs,
                                     info=job.info, meter=meter))
    results = tuple(r for block in distributed.gather(blocks, world) for r in block)
    usage = _gathered_usage(meter.totals, world)
    model = dict(plan.model.lm.describe()) if plan.model.loaded else None
    return Executed(results, described, meta_hashes, budgets, model, world.size, world.main, usage)


def _describe(lp: LearnerPlan, learner: Any, plan: RunPlan, described: dict[str, dict[str, Any]],
              budgets: dict[tuple[str, str], dict[str, Any]]) -> None:
    """What the manifest records of each output of ``learner``: its description, the prompts it ran with, its label
    probes and order invariance (when probing), and its data budget."""
    task = lp.task.name
    for name in lp.outputs or (lp.method,):
        key = f"{task}/{name}"
        info = learner.describe_output(name) if lp.outputs else learner.describe()
        described.setdefault(key, dict(info))
        if lp.prompt is not None and lp.probes != ("unrelated",):  # the prompts it ran with, in order
            described[key].setdefault("prompts", []).append({"name": lp.prompt.name, "hash": lp.prompt.hash})
        if plan.config.probing:
            described[key]["order_invariant"] = not learners.entry(lp.method).capabilities.order_sensitive
            described[key].setdefault("label_probes", [])
            described[key]["label_probes"] += [p for p in lp.probes if p not in described[key]["label_probes"]]
        budgets[(task, name)] = budget_fields(described[key], plan.protocols[task])


def _gathered_usage(mine: Mapping[str, Usage], world: distributed.World) -> dict[str, Usage]:
    """The usage of every process, summed per bucket (one process: its own)."""
    out: dict[str, Usage] = {}
    for part in distributed.gather([[dict(mine)]], world)[0]:
        for bucket, usage in part.items():
            out[bucket] = out.get(bucket, Usage()) + usage
    return out


def run_method(learner: learners.Learner, episodes: Sequence[Episode], *, progress: bool = True,
               desc: str = "", checkpoint: Checkpoint | None = None, per_call: int = 1,
               outputs: Sequence[str] = (), info: Mapping[str, Any] | None = None,
               meter: Meter | None = None) -> list[EpisodeResult]:
    """Adapt to each episode's support and predict its queries (episodes finished in ``checkpoint`` are reused).

    ``per_call > 1`` (a learner whose capabilities say ``batches_episodes``) hands it that many episodes at a time
    through ``predict_episodes``, so an LM can batch queries across episodes; results equal one at a time.
    ``outputs`` (a ``MultiOutput`` learner, capabilities ``variants``): the method names it computes from one pass
    through ``predict_outputs``; one result per name and episode, grouped by name. ``info`` is recorded with every
    result (the prompt a prompted learner ran with). ``meter``: the LM usage of each call is checkpointed with its
    episodes, and that of episodes read back from the checkpoint credited to the meter."""
    names = tuple(outputs) or (learner.name,)
    info = dict(info or {})
    done = {(n, ep.id): checkpoint.get(n, ep, info) for n in names for ep in episodes} if checkpoint is not None else {}
    todo = [ep for ep in episodes if any(done.get((n, ep.id)) is None for n in names)]
    usage_key = f"{'+'.join(names)}|{info_key(info)}"
    if meter is not None and checkpoint is not None:
        restored = {ep.id for ep in episodes} - {ep.id for ep in todo}
        for used in checkpoint.restored_usage(usage_key, restored):
            meter.credit(Usage.from_dict(used))
    bar = tqdm(total=len(episodes), initial=len(episodes) - len(todo), desc=desc, disable=not progress,
               file=sys.stderr, leave=False)
    for start in range(0, len(todo), per_call):
        chunk = todo[start:start + per_call]
        inputs = [(ep.support, ep.labels, ep.query) for ep in chunk]
        try:
            if outputs:
                predicted = learner.predict_outputs(inputs)  # type: ignore[attr-defined]
            elif per_call > 1:
                predicted = [{learner.name: p} for p in learner.predict_episodes(inputs)]  # type: ignore[attr-defined]
            else:
                predicted = [{learner.name: learner.adapt(s, labels).predict(q)} for s, labels, q in inputs]
        except IclkitError as e:
            where = chunk[0].id if len(chunk) == 1 else f"{chunk[0].id} .. {chunk[-1].id}"
            raise IclkitError(f"episode {where}: {e.message}", file=e.file, line=e.line, field=e.field,
                              hint=e.hint) from None
        used = meter.take() if meter is not None else None
        if checkpoint is not None and used is not None and used != Usage():
            checkpoint.append_usage(usage_key, [ep.id for ep in chunk], used.to_dict())
        for ep, by_name in zip(chunk, predicted):
            for n in names:
                result = EpisodeResult(episode_id=ep.id, episode_hash=ep.hash, task=ep.task, method=n,
                                       shots=ep.shots, labels=ep.labels, predictions=tuple(by_name[n]), info=info)
                if checkpoint is not None:
                    checkpoint.append(result)
                done[(n, ep.id)] = result
        bar.update(len(chunk))
    bar.close()
    return [done[(n, ep.id)] for n in names for ep in episodes]
