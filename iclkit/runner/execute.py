"""Running learners on episodes: Task → Episodes → Learner.adapt(support) → predict(query) → RunResult.

The loop knows learners only through their registry entry: capabilities (fewest shots, open answers, several
episodes per call) and whether they are meta-learners; no method is special-cased by name.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from iclkit import learners
from iclkit.analysis.paired import COMPARISON_VERSION, compare, comparison_table
from iclkit.analysis.summary import SUMMARY_VERSION, budget_text, markdown_table, prompt_rows, records, summarize
from iclkit.analysis.uses import uses_summary, uses_tables
from iclkit.data.tasks import TaskData, load_task
from iclkit.episodes import EpisodeConfig, sample_episodes, write_episodes
from iclkit.errors import IclkitError
from iclkit.files import staged_dir, write_json, write_jsonl
from iclkit.learners.options import MetaTrainOptions
from iclkit.lm import ModelSpec, load_lm
from iclkit.metatrain import training_episodes
from iclkit.protocols import NO_META_TRAINING, MetaTrainPlan, budget_fields, plan_for
from iclkit.probes import perturb_labels, probe_lines, probe_variants
from iclkit.prompts import PromptTemplate, load_prompt
from iclkit.runner import distributed
from iclkit.runner.checkpoint import Checkpoint, config_key
from iclkit.runner.config import RunConfig
from iclkit.shots import ShotPlan, ShotsRequest, plan_task, shots_line
from iclkit.types import Episode, EpisodeResult, episodes_hash


@dataclass
class RunResult:
    """Results of a run: every episode result, the summary rows, and the manifest."""

    config: RunConfig
    episodes: dict[str, list[Episode]]
    results: list[EpisodeResult]
    manifest: dict[str, Any]
    summary: list[dict[str, Any]] = field(default_factory=list)
    comparison: list[dict[str, Any]] = field(default_factory=list)  # paired differences vs the reference method
    budgets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (task, method) → data budget
    prompts: list[dict[str, Any]] = field(default_factory=list)  # per-prompt rows of cells run under several prompts
    probes: list[dict[str, Any]] = field(default_factory=list)  # probes.jsonl: each perturbed episode / permutation
    uses: dict[str, Any] = field(default_factory=dict)  # label probes, orders, variance (iclkit.analysis.uses)

    def table(self) -> str:
        text = markdown_table(self.summary)
        if self.comparison:
            text += (f"\n\nPaired difference vs {self.config.reference} (same episodes):\n\n"
                     + comparison_table(self.comparison))
        used = sorted({(task, b["meta_train"], tuple(b["meta_tasks"]),
                        budget_text(b) if b["meta_train"] == "self-supervised" else "")  # its counts: per method
                       for (task, _), b in self.budgets.items() if b["meta_train"] != NO_META_TRAINING})
        if used:
            plans = self.manifest.get("meta_training", {})
            lines = []
            for task, protocol, sources, counted in used:
                plan = plans.get(task) or {}
                left_out = ", ".join(f"{k} ({v})" for k, v in plan.get("excluded", {}).items()
                                     if protocol in ("cross-task", "self-supervised"))
                left_out = f"; left out: {left_out}" if left_out else ""
                if protocol == "self-supervised":
                    lines.append(f"- {task}: {counted}{left_out}")
                elif protocol == "class-split":
                    lines.append(f"- {task}: class-split: meta-trained on {', '.join(plan.get('train_classes', []))}; "
                                 f"every method evaluated on {', '.join(plan.get('eval_classes') or [])}")
                else:
                    lines.append(f"- {task}: {protocol} on {', '.join(sources)}{left_out}")
            text += ("\n\nMeta-training data (texts outside the episodes, labelled unless self-supervised; "
                     "manifest.json has it all):\n")
            text += "\n".join(lines)
        if self.manifest.get("shots_auto"):
            text += f"\n\nShots sized to the model's context window (--shots {self.config.auto_shots}):\n"
            text += "\n".join(shots_line(task, plan) for task, plan in self.manifest["shots_auto"].items())
        if self.uses:
            text += "\n\n" + uses_tables(self.uses)
        return text

    def records(self) -> list[dict[str, Any]]:
        return [rec for r in self.results for rec in records(r, self.budgets.get((r.task, r.method)))]


@dataclass(frozen=True)
class _Job:
    """One learner to run on one task's episodes: the method it was built as, the outputs it computes in one pass
    (a learner with variants), the prompt it renders (a prompted learner), and the label probes it runs (``unrelated``
    gets a job of its own per verbalizer mapping, its prompt showing the unrelated words)."""

    task: TaskData
    method: str
    outputs: tuple[str, ...]
    prompt: PromptTemplate | None
    learner: Any
    episodes: list[Episode]
    probes: tuple[str, ...] = ("gold",)


def prompt_info(prompt: PromptTemplate | None) -> dict[str, str]:
    """What a result records about its prompt: name and text hash (nothing for a learner without one)."""
    return {"prompt": prompt.name, "prompt_hash": prompt.hash} if prompt is not None else {}


def _prompts_for(task: TaskData, override: Sequence[str] | None) -> tuple[PromptTemplate, ...]:
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


class _LazyLM:
    """Loads the model on first use, so baseline-only runs never load it."""

    def __init__(self, spec: ModelSpec, score_cache: str | Path | None = None):
        self.spec = spec
        self.score_cache = score_cache
        self.lm: Any = None

    def __call__(self) -> Any:
        if self.lm is None:
            self.lm = load_lm(self.spec)
            if self.score_cache is not None:
                from iclkit.lm.scorecache import CachedLM

                self.lm = CachedLM(self.lm, self.score_cache)
        return self.lm


def run_method(learner: learners.Learner, episodes: Sequence[Episode], *, progress: bool = True,
               desc: str = "", checkpoint: Checkpoint | None = None, per_call: int = 1,
               outputs: Sequence[str] = (), info: Mapping[str, Any] | None = None) -> list[EpisodeResult]:
    """Adapt to each episode's support and predict its queries (episodes finished in ``checkpoint`` are reused).

    ``per_call > 1`` (a learner whose capabilities say ``batches_episodes``) hands it that many episodes at a time
    through ``predict_episodes``, so an LM can batch queries across episodes; results equal one at a time.
    ``outputs`` (a ``MultiOutput`` learner, capabilities ``variants``): the method names it computes from one pass
    through ``predict_outputs``; one result per name and episode, grouped by name. ``info`` is recorded with every
    result (the prompt a prompted learner ran with)."""
    names = tuple(outputs) or (learner.name,)
    info = dict(info or {})
    done = {(n, ep.id): checkpoint.get(n, ep, info) for n in names for ep in episodes} if checkpoint is not None else {}
    todo = [ep for ep in episodes if any(done.get((n, ep.id)) is None for n in names)]
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


def run(config: RunConfig, out: str | Path | None = None, *, progress: bool = True,
        score_cache: str | Path | None = None) -> RunResult:
    """Run every method on the same episodes of every task; write the run folder if ``out`` is given.

    With ``out``, finished episodes are checkpointed beside it, so a killed run started again with the same
    config resumes where it stopped. ``score_cache``: sqlite file of LM scores reused across runs.
    """
    config.check()
    tasks = [load_task(t, text_field=config.text_field, label_field=config.label_field) for t in config.tasks]
    prompts = {t.name: _prompts_for(t, config.prompt_names()) for t in tasks}
    meta_options = learners.MethodContext(task=None, seed=0, options=config.options).run_wide(MetaTrainOptions)
    # The protocol comes first: a class-split decides which classes every method's evaluation episodes use.
    plans = {t.name: plan_for(t, meta_options, config.episodes.n_way, config.episodes.seed) for t in tasks}
    get_lm = _LazyLM(config.model, score_cache)
    # --shots auto / max: each task's shot counts sized to the model's context under its prompts, before any draw
    request = config.auto_shots
    shot_plans = {t.name: _plan_shots(t, prompts[t.name], get_lm(), config, request, _eval_classes(plans[t.name]))
                  for t in tasks} if request is not None else {}
    episodes = {t.name: sample_episodes(t, replace(config.episodes, shots=request.pick(shot_plans[t.name]))
                                        if request is not None else config.episodes,
                                        classes=_eval_classes(plans[t.name])) for t in tasks}
    # every label probe of every episode, drawn before any work: a probe no episode can take (flipped with one
    # label) fails here, with nothing written
    probed = {t.name: {e.id: {kind: perturb_labels(e, kind, config.episodes.seed) for kind in config.labels}
                       for e in episodes[t.name]} for t in tasks}
    train_sets: dict[str, list[Episode]] = {}

    def train_for(task: TaskData) -> list[Episode]:
        if task.name not in train_sets:  # drawn once per task, shared by its meta-learners
            train_sets[task.name] = training_episodes(task, episodes[task.name], meta_options, config.episodes.seed,
                                                      plans[task.name])
        return train_sets[task.name]

    # Meta-training episodes are drawn now, from sources resolved under each task's protocol, before any model is
    # loaded (only --shots auto has used the tokenizer above): a run that cannot be served fails here, writing nothing.
    trains = [m for m in config.methods if learners.entry(m).capabilities.meta_trains]
    for task in tasks if trains else ():
        if plans[task.name] is not None:
            train_for(task)
    world = distributed.init()  # under accelerate launch / torchrun: this process runs every world.size-th episode
    progress = progress and world.main
    ckpt = Checkpoint(out, config_key(config.to_dict())) if out is not None and world.main else None
    embeddings: dict[str, Any] = {}  # this run's embedding caches, shared by its baselines
    blocks: list[list[EpisodeResult]] = []
    described: dict[str, Any] = {}
    meta_hashes: dict[str, str] = {}
    budgets: dict[tuple[str, str], dict[str, Any]] = {}
    query_fields: dict[str, tuple[str, ...]] = {}
    # Every learner is built before any episode runs, so an option no episode can satisfy fails with nothing written.
    jobs: list[_Job] = []
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
            method = names[0]  # the registry entry that builds the learner (one factory serves a variant family)
            min_shots = max(learners.entry(m).capabilities.min_shots for m in names)
            eps = [e for e in episodes[task.name] if e.shots >= min_shots]
            for prompt in prompts[task.name] if caps.prompted else (None,):
                def build(p: PromptTemplate | None, job_eps: list[Episode], task: TaskData = task,
                          method: str = method, names: list[str] = names, caps: Any = caps) -> Any:
                    ctx = learners.MethodContext(
                        task=task, seed=config.episodes.seed, options=config.options, get_lm=get_lm,
                        get_prompt=lambda: p, train_episodes=lambda t=task: train_for(t),
                        embeddings=embeddings, progress=progress, outputs=tuple(names) if caps.variants else (),
                        episodes=job_eps)
                    return ctx.outputs, learners.make(method, ctx)

                outputs, learner = build(prompt, eps)
                jobs.append(_Job(task, method, outputs, prompt, learner, eps,
                                 tuple(p for p in config.labels if p != "unrelated")))
                if "unrelated" in config.labels and caps.prompted and prompt is not None:
                    # one learner per verbalizer mapping: its prompt shows the unrelated words instead of the labels
                    by_mapping: dict[tuple[tuple[str, str], ...], list[Episode]] = {}
                    for e in eps:
                        mapping = probed[task.name][e.id]["unrelated"].probe.mapping
                        by_mapping.setdefault(tuple(sorted(mapping.items())), []).append(e)
                    for mapping_items, group in by_mapping.items():
                        shown = replace(prompt, verbalizer=dict(mapping_items))
                        outputs, learner = build(shown, group)
                        jobs.append(_Job(task, method, outputs, shown, learner, group, ("unrelated",)))
    for job in jobs:  # learners that did not declare meta_trains: their sources too, before any episode runs
        if _meta_trains(job):
            train_for(job.task)
    for job in jobs:
        learner, task = job.learner, job.task
        if _meta_trains(job):
            train = train_for(task)
            learner.meta_train(train)
            meta_hashes[f"{task.name}/{job.method}"] = episodes_hash(train)
        for name in job.outputs or (job.method,):
            key = f"{task.name}/{name}"
            info = learner.describe_output(name) if job.outputs else learner.describe()  # type: ignore[attr-defined]
            described.setdefault(key, dict(info))
            if job.prompt is not None and job.probes != ("unrelated",):  # the prompts it ran with, in order
                described[key].setdefault("prompts", []).append({"name": job.prompt.name, "hash": job.prompt.hash})
            if config.probing:
                described[key]["order_invariant"] = not learners.entry(job.method).capabilities.order_sensitive
                described[key].setdefault("label_probes", [])
                described[key]["label_probes"] += [p for p in job.probes if p not in described[key]["label_probes"]]
            budgets[(task.name, name)] = budget_fields(described[key], plans[task.name])
        caps = learners.entry(job.method).capabilities
        per_call = learner.episodes_per_call() if caps.batches_episodes else 1  # type: ignore[attr-defined]
        where = f" [{job.prompt.name}]" if job.prompt is not None and len(prompts[task.name]) > 1 else ""
        n_orders = config.orders if caps.order_sensitive else 1  # an order-invariant learner: the drawn order only
        for kind in job.probes:
            variants = probe_variants([probed[task.name][e.id][kind] for e in job.episodes], n_orders,
                                       config.episodes.seed)
            for index, eps in enumerate(variants):
                if not eps:
                    continue
                probe = {"labels": kind, "permutation": index} if config.probing else {}
                label = f" {kind}" + (f" order {index}" if n_orders > 1 else "") if config.probing else ""
                blocks.append(run_method(learner, distributed.shard(eps, world), progress=progress,
                                         desc=f"{task.name} {job.method}{where}{label}", checkpoint=ckpt,
                                         per_call=per_call, outputs=job.outputs,
                                         info={**prompt_info(job.prompt), **probe}))
    results = [r for block in distributed.gather(blocks, world) for r in block]
    # The main rows and the paired comparison stay those of the episodes as drawn: gold labels, drawn order.
    main = [r for r in results if r.info.get("labels", "gold") == "gold" and r.info.get("permutation", 0) == 0]
    manifest = {
        "iclkit_summary_version": SUMMARY_VERSION,
        "config": config.to_dict(),
        "versions": versions(),
        "model": dict(get_lm.lm.describe()) if get_lm.lm is not None else None,
        "tasks": {t.name: {"source": t.source, "file": t.spec.file, "n_train": len(t.train), "n_test": len(t.test),
                           "labels": list(t.labels)} for t in tasks},
        "prompts": {name: [{"name": p.name, "hash": p.hash, "file": p.file} for p in ps]
                    for name, ps in prompts.items()},
        "episodes_hash": {name: episodes_hash(eps) for name, eps in episodes.items()},
        **({"shots_auto": {name: {"request": str(config.auto_shots), **plan.to_dict(),
                                  "shots_run": sorted({e.shots for e in episodes[name]})}
                           for name, plan in shot_plans.items()}} if shot_plans else {}),
        "methods": described,
        "meta_train_episodes_hash": meta_hashes,
        "meta_training": {name: plan.to_dict() if plan else None for name, plan in plans.items()},
        "budgets": {f"{task}/{method}": b for (task, method), b in budgets.items()},
        "seed": config.episodes.seed,
        "processes": world.size,
    }
    summary = summarize(main, seed=config.episodes.seed, query_fields=query_fields, budgets=budgets)
    comparison = (compare(main, reference=config.reference, seed=config.episodes.seed, budgets=budgets)
                  if config.reference in config.methods else [])
    invariant = {key: bool(d.get("order_invariant")) for key, d in described.items()}
    result = RunResult(config, episodes, results, manifest, summary, comparison, budgets,
                       prompt_rows(main, seed=config.episodes.seed),
                       probe_lines(probed, config.orders, config.episodes.seed) if config.probing else [],
                       uses_summary(results, seed=config.episodes.seed, invariant=invariant,
                                    n_orders=config.orders) if config.probing else {})
    if out is not None and world.main:
        save(result, Path(out))
        if ckpt is not None:
            ckpt.remove()
    return result


def _plan_shots(task: TaskData, prompts: Sequence[PromptTemplate], lm: Any, config: RunConfig,
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


def _meta_trains(job: _Job) -> bool:
    """Whether ``job``'s learner meta-trains: as its registration declares, else whether it is a MetaLearner."""
    declared = learners.entry(job.method).capabilities.meta_trains
    return declared if declared is not None else isinstance(job.learner, learners.MetaLearner)


def _eval_classes(plan: MetaTrainPlan | None) -> tuple[str, ...] | None:
    return plan.eval_classes if plan is not None else None


def versions() -> dict[str, str]:
    """Python, platform and the versions of every package that can move a score."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("iclkit", "torch", "transformers", "accelerate", "datasets", "evaluate", "numpy", "scipy",
                 "scikit-learn", "bitsandbytes"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def save(result: RunResult, out: Path) -> None:
    """Write records.jsonl, episodes.jsonl, manifest.json, summary.json/.md, plots/; all or nothing."""
    # matplotlib loads only when a run folder is written
    from iclkit.export.plots import write_plots
    from iclkit.export.uses_plot import write_uses_plots

    with staged_dir(out) as tmp:
        write_jsonl(tmp / "records.jsonl", result.records())
        write_episodes([e for eps in result.episodes.values() for e in eps], tmp / "episodes.jsonl")
        if result.probes:
            write_jsonl(tmp / "probes.jsonl", result.probes)
        write_json(tmp / "manifest.json", result.manifest)
        write_json(tmp / "summary.json", {"version": SUMMARY_VERSION, "results": result.summary,
                                          **({"prompts": result.prompts} if result.prompts else {}),
                                          **result.uses})
        (tmp / "summary.md").write_text(result.table() + "\n", encoding="utf-8")
        if result.comparison:
            write_json(tmp / "comparison.json", {"version": COMPARISON_VERSION, "reference": result.config.reference,
                                                 "rows": result.comparison})
        write_plots(result.summary, tmp / "plots", prompt_rows=result.prompts)
        if result.uses:
            write_uses_plots(result.uses, tmp / "plots")


def evaluate(tasks: str | Sequence[str] = RunConfig.tasks, *, model: str | ModelSpec = ModelSpec.name,
             shots: Sequence[int] | str = EpisodeConfig.shots, n_episodes: int = EpisodeConfig.n_episodes,
             n_way: int | None = None, n_query: int = EpisodeConfig.n_query, seed: int = EpisodeConfig.seed,
             methods: Sequence[str] = RunConfig.methods, prompt: str | Sequence[str] | None = None,
             out: str | Path | None = None,
             progress: bool = True, score_cache: str | Path | None = None, **options: Any) -> RunResult:
    """Python entry point: ``iclkit.evaluate("sst2", shots=[0, 4], n_episodes=20, methods=DEFAULT_METHODS)``.

    ``shots``: counts, or ``"auto"`` / ``"0,4,max"`` (sized to the model's context window, README "Episodes");
    ``prompt`` names one prompt or several (``"a,b"`` or a list; default: the task's own ``prompts``), and
    ``calibration="none,contextual,dcpmi,batch"`` adds ICL's calibrated outputs (README "Fair ICL").
    ``options`` are learner and run-wide options by name (``normalize="mean"``, ``knn_k=10``, ``embed="minilm"``);
    an unknown name is an IclkitError listing the valid ones. Defaults are RunConfig's, as for the CLI."""
    given: dict[str, Any] = {"tasks": (tasks,) if isinstance(tasks, str) else tuple(tasks),
                             "shots": shots if isinstance(shots, str) else tuple(shots),
                             "n_episodes": n_episodes, "n_way": n_way, "n_query": n_query, "seed": seed,
                             "methods": tuple(methods), "prompt": prompt, **options}
    config = RunConfig.from_options(given)
    if isinstance(model, ModelSpec):
        config = RunConfig(**{**vars(config), "model": model})
    else:
        config = RunConfig(**{**vars(config), "model": ModelSpec(**{**vars(config.model), "name": model})})
    return run(config, out, progress=progress, score_cache=score_cache)
