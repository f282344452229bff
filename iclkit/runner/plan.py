"""Stage 1 of a run: ``plan(config) → RunPlan``, everything the run will do, decided before any LM work.

A plan lists the tasks, their prompts, each task's meta-training protocol and (``--shots auto``) shot plan, the
evaluation episodes, every label probe of every episode, the meta-training episodes of the learners that declare
them, the learners to build, and the jobs: task × method × prompt × label probe × demonstration order, each with
the episodes it runs. Everything that can fail on the configuration fails here, with nothing loaded but (for
``--shots auto``, which sizes prompts with the model's own tokenization) the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from iclkit import learners
from iclkit.data.tasks import TaskData, load_task
from iclkit.episodes import sample_episodes
from iclkit.errors import IclkitError
from iclkit.learners.options import MetaTrainOptions
from iclkit.metatrain import training_episodes
from iclkit.probes import ProbedEpisode, perturb_labels, probe_variants
from iclkit.prompts import PromptTemplate, load_prompt
from iclkit.protocols import MetaTrainPlan, plan_for
from iclkit.runner.config import RunConfig
from iclkit.runner.model import ModelHandle
from iclkit.shots import ShotPlan, ShotsRequest, plan_task
from iclkit.types import Episode


@dataclass(frozen=True)
class LearnerPlan:
    """One learner to build for one task: the registry entry that builds it (``method``), the outputs it computes
    in one pass (a learner with variants), the prompt it renders (a prompted learner), the episodes it will be
    handed (so its factory can refuse an option none of them satisfies) and the label probes it runs (``unrelated``
    gets a learner of its own per verbalizer mapping, its prompt showing the unrelated words)."""

    task: TaskData
    method: str
    outputs: tuple[str, ...]
    prompt: PromptTemplate | None
    episodes: tuple[Episode, ...]
    probes: tuple[str, ...] = ("gold",)


@dataclass(frozen=True)
class Job:
    """One learner run on one label probe in one demonstration order: ``episodes`` as the learner sees them, and
    ``info``, what every result of the job records besides its scores (prompt; probe and permutation when probing).
    ``learner`` indexes ``RunPlan.learners``."""

    learner: int
    task: str
    method: str
    prompt: str | None
    labels: str
    permutation: int
    episodes: tuple[Episode, ...]
    info: Mapping[str, Any]
    desc: str  # the progress bar's label

    @property
    def queries(self) -> int:
        """Queries the job predicts (over all its episodes)."""
        return sum(len(e.query) for e in self.episodes)


@dataclass(frozen=True)
class RunPlan:
    """Everything a run will do, listed before any LM work (see the module docstring).

    ``probed``: task → episode id → label probe → the probed episode. ``train_episodes``: meta-training episodes
    per task, drawn for the learners whose registration says they meta-train (a learner that leaves it open gets
    its own once built). ``model``: the run's model handle, loaded only if ``--shots auto`` needed its tokenizer."""

    config: RunConfig
    tasks: tuple[TaskData, ...]
    prompts: Mapping[str, tuple[PromptTemplate, ...]]
    protocols: Mapping[str, MetaTrainPlan | None]
    shot_plans: Mapping[str, ShotPlan]
    episodes: Mapping[str, tuple[Episode, ...]]
    probed: Mapping[str, Mapping[str, Mapping[str, ProbedEpisode]]]
    meta_options: MetaTrainOptions
    train_episodes: Mapping[str, tuple[Episode, ...]]
    query_fields: Mapping[str, tuple[str, ...]]
    learners: tuple[LearnerPlan, ...]
    jobs: tuple[Job, ...]
    model: ModelHandle = field(compare=False, repr=False)

    def task(self, name: str) -> TaskData:
        """The loaded task called ``name``."""
        return next(t for t in self.tasks if t.name == name)


def prompt_info(prompt: PromptTemplate | None) -> dict[str, str]:
    """What a result records about its prompt: name and text hash (nothing for a learner without one)."""
    return {"prompt": prompt.name, "prompt_hash": prompt.hash} if prompt is not None else {}


def plan(config: RunConfig, *, model: ModelHandle | None = None) -> RunPlan:
    """Everything ``config`` asks for, drawn and checked; ``model``: the handle later stages share (a new one by
    default, loaded here only for ``--shots auto``)."""
    config.check()
    seed = config.episodes.seed
    tasks = tuple(load_task(t, text_field=config.text_field, label_field=config.label_field) for t in config.tasks)
    prompts = {t.name: prompts_for(t, config.prompt_names()) for t in tasks}
    meta_options = learners.MethodContext(task=None, seed=0, options=config.options).run_wide(MetaTrainOptions)
    # The protocol comes first: a class-split decides which classes every method's evaluation episodes use.
    protocols = {t.name: plan_for(t, meta_options, config.episodes.n_way, seed) for t in tasks}
    model = model if model is not None else ModelHandle(config.model)
    # --shots auto / max: each task's shot counts sized to the model's context under its prompts, before any draw
    request = config.auto_shots
    shot_plans = {t.name: plan_shots(t, prompts[t.name], model(), config, request, _eval_classes(protocols[t.name]))
                  for t in tasks} if request is not None else {}
    episodes = {t.name: tuple(sample_episodes(t, replace(config.episodes, shots=request.pick(shot_plans[t.name]))
                                              if request is not None else config.episodes,
                                              classes=_eval_classes(protocols[t.name]))) for t in tasks}
    # every label probe of every episode, drawn before any work: a probe no episode can take (flipped with one
    # label) fails here, with nothing written
    probed = {t.name: {e.id: {kind: perturb_labels(e, kind, seed) for kind in config.labels}
                       for e in episodes[t.name]} for t in tasks}
    # Meta-training episodes are drawn now, from sources resolved under each task's protocol, before any model is
    # loaded (only --shots auto has used the tokenizer above): a run that cannot be served fails here.
    trains = any(learners.entry(m).capabilities.meta_trains for m in config.methods)
    train_episodes = {t.name: tuple(training_episodes(t, list(episodes[t.name]), meta_options, seed,
                                                      protocols[t.name]))
                      for t in tasks if trains and protocols[t.name] is not None}
    planned, query_fields = _learners(config, tasks, prompts, episodes, probed)
    jobs = tuple(job for i, lp in enumerate(planned) for job in _jobs(i, lp, config, probed, len(prompts[lp.task.name])))
    return RunPlan(config, tasks, prompts, protocols, shot_plans, episodes, probed, meta_options, train_episodes,
                   query_fields, planned, jobs, model)


def _learners(config: RunConfig, tasks: Sequence[TaskData], prompts: Mapping[str, tuple[PromptTemplate, ...]],
              episodes: Mapping[str, tuple[Episode, ...]],
              probed: Mapping[str, Mapping[str, Mapping[str, ProbedEpisode]]]
              ) -> tuple[tuple[LearnerPlan, ...], dict[str, tuple[str, ...]]]:
    """The learners to build, task by task in the order of ``config.methods``, and each method's per-query
    summary fields."""
    out: list[LearnerPlan] = []
    query_fields: dict[str, tuple[str, ...]] = {}
    gold_probes = tuple(p for p in config.labels if p != "unrelated")
    for task in tasks:
        grouped: set[str] = set()
        for method in config.methods:
            if method in grouped:
                continue
            caps = learners.entry(method).capabilities
            # a learner with variants computes every requested one of them from one pass: built once for all
            names = [m for m in config.methods if m in caps.variants] if method in caps.variants else [method]
            grouped.update(names)
            for name in names:
                query_fields[name] = learners.entry(name).capabilities.query_fields
            if task.spec.type == "generation":  # open-answer tasks have no label set for a classifier to pick from
                names = [m for m in names if learners.entry(m).capabilities.open_answers]
            if not names:
                continue
            builder = names[0]  # the registry entry that builds the learner (one factory serves a variant family)
            outputs = tuple(names) if caps.variants else ()
            min_shots = max(learners.entry(m).capabilities.min_shots for m in names)
            eps = tuple(e for e in episodes[task.name] if e.shots >= min_shots)
            for prompt in prompts[task.name] if caps.prompted else (None,):
                out.append(LearnerPlan(task, builder, outputs, prompt, eps, gold_probes))
                if "unrelated" in config.labels and caps.prompted and prompt is not None:
                    # one learner per verbalizer mapping: its prompt shows the unrelated words instead of the labels
                    by_mapping: dict[tuple[tuple[str, str], ...], list[Episode]] = {}
                    for e in eps:
                        mapping = probed[task.name][e.id]["unrelated"].probe.mapping
                        by_mapping.setdefault(tuple(sorted(mapping.items())), []).append(e)
                    for mapping_items, group in by_mapping.items():
                        shown = replace(prompt, verbalizer=dict(mapping_items))
                        out.append(LearnerPlan(task, builder, outputs, shown, tuple(group), ("unrelated",)))
    return tuple(out), query_fields


def _jobs(index: int, lp: LearnerPlan, config: RunConfig,
          probed: Mapping[str, Mapping[str, Mapping[str, ProbedEpisode]]], n_prompts: int) -> list[Job]:
    """The runs of learner ``index``: one per label probe and demonstration order (an order-invariant learner runs
    the drawn order only); an order no episode has (too few distinct orders) is left out."""
    caps = learners.entry(lp.method).capabilities
    where = f" [{lp.prompt.name}]" if lp.prompt is not None and n_prompts > 1 else ""
    n_orders = config.orders if caps.order_sensitive else 1
    seed = config.episodes.seed
    jobs = []
    for kind in lp.probes:
        variants = probe_variants([probed[lp.task.name][e.id][kind] for e in lp.episodes], n_orders, seed)
        for order, eps in enumerate(variants):
            if not eps:
                continue
            probe = {"labels": kind, "permutation": order} if config.probing else {}
            label = f" {kind}" + (f" order {order}" if n_orders > 1 else "") if config.probing else ""
            jobs.append(Job(index, lp.task.name, lp.method, lp.prompt.name if lp.prompt is not None else None, kind,
                            order, tuple(eps), {**prompt_info(lp.prompt), **probe},
                            f"{lp.task.name} {lp.method}{where}{label}"))
    return jobs


def prompts_for(task: TaskData, override: Sequence[str] | None) -> tuple[PromptTemplate, ...]:
    """The prompts a task runs with: ``override`` (``--prompt a,b``), else the task's ``prompts``, else its one
    ``prompt``; each checked against the task's fields and labels."""
    names = override or task.spec.prompts or (task.spec.prompt,)
    out = tuple(_prompt_for(task, name) for name in dict.fromkeys(names))
    if len({p.name for p in out}) != len(out):
        raise IclkitError(f"two of the prompts {list(names)} share a name", field="prompt")
    return out


def _prompt_for(task: TaskData, name: str) -> PromptTemplate:
    if name == "default" and task.spec.inputs != ("text",):
        body = "\n".join(f"{f.capitalize()}: {{{f}}}" for f in task.spec.inputs)
        prompt = PromptTemplate(name="default", template=body + "\nLabel:")
    else:
        prompt = load_prompt(name)
    prompt.check(task.spec.inputs, task.labels)
    return prompt


def plan_shots(task: TaskData, prompts: Sequence[PromptTemplate], lm: Any, config: RunConfig,
               request: ShotsRequest, classes: Sequence[str] | None) -> ShotPlan:
    """The largest k whose worst-case prompt fits ``lm``'s context under every prompt and label probe of ``task``, in
    the format the run's prompted learners render (their ``chat`` and ``max_new_tokens`` options)."""
    specs = [learners.entry(m).options for m in config.methods if learners.entry(m).capabilities.prompted]
    specs = [spec for spec in specs if spec is not None]
    chat = any(spec.value("chat", config.options) for spec in specs)
    new_tokens = max([int(spec.value("max_new_tokens", config.options)) for spec in specs], default=0)
    return plan_task(task, prompts, lm, n_way=config.episodes.n_way, classes=classes, chat=chat,
                     max_shots=request.cap, max_new_tokens=new_tokens if task.spec.type == "generation" else 0,
                     probes=config.labels)


def _eval_classes(protocol: MetaTrainPlan | None) -> tuple[str, ...] | None:
    return protocol.eval_classes if protocol is not None else None
