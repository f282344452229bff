"""Running learners on episodes: Task → Episodes → Learner.adapt(support) → predict(query) → RunResult.

The loop knows learners only through their registry entry: capabilities (fewest shots, open answers, several
episodes per call) and whether they are meta-learners; no method is special-cased by name.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from iclkit import learners
from iclkit.analysis.paired import COMPARISON_VERSION, compare, comparison_table
from iclkit.analysis.summary import SUMMARY_VERSION, markdown_table, records, summarize
from iclkit.data.tasks import TaskData, load_task
from iclkit.episodes import EpisodeConfig, sample_episodes, write_episodes
from iclkit.errors import IclkitError
from iclkit.files import staged_dir, write_json, write_jsonl
from iclkit.learners.options import MetaTrainOptions
from iclkit.lm import ModelSpec, load_lm
from iclkit.metatrain import training_episodes
from iclkit.prompts import PromptTemplate, load_prompt
from iclkit.runner import distributed
from iclkit.runner.checkpoint import Checkpoint, config_key
from iclkit.runner.config import RunConfig
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

    def table(self) -> str:
        if not self.comparison:
            return markdown_table(self.summary)
        return (markdown_table(self.summary) + f"\n\nPaired difference vs {self.config.reference} (same episodes):\n\n"
                + comparison_table(self.comparison))

    def records(self) -> list[dict[str, Any]]:
        return [rec for r in self.results for rec in records(r)]


def _prompt_for(task: TaskData, override: str | None) -> PromptTemplate:
    name = override or task.spec.prompt
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
               desc: str = "", checkpoint: Checkpoint | None = None, per_call: int = 1) -> list[EpisodeResult]:
    """Adapt to each episode's support and predict its queries (episodes finished in ``checkpoint`` are reused).

    ``per_call > 1`` (a learner whose capabilities say ``batches_episodes``) hands it that many episodes at a time
    through ``predict_episodes``, so an LM can batch queries across episodes; results equal one at a time."""
    done = {ep.id: checkpoint.get(learner.name, ep) for ep in episodes} if checkpoint is not None else {}
    todo = [ep for ep in episodes if done.get(ep.id) is None]
    bar = tqdm(total=len(episodes), initial=len(episodes) - len(todo), desc=desc, disable=not progress,
               file=sys.stderr, leave=False)
    for start in range(0, len(todo), per_call):
        chunk = todo[start:start + per_call]
        try:
            if per_call > 1:
                predicted = learner.predict_episodes([(ep.support, ep.labels, ep.query) for ep in chunk])
            else:
                predicted = [learner.adapt(ep.support, ep.labels).predict(ep.query) for ep in chunk]
        except IclkitError as e:
            where = chunk[0].id if len(chunk) == 1 else f"{chunk[0].id} .. {chunk[-1].id}"
            raise IclkitError(f"episode {where}: {e.message}", file=e.file, line=e.line, field=e.field,
                              hint=e.hint) from None
        for ep, preds in zip(chunk, predicted):
            result = EpisodeResult(episode_id=ep.id, episode_hash=ep.hash, task=ep.task, method=learner.name,
                                   shots=ep.shots, labels=ep.labels, predictions=tuple(preds))
            if checkpoint is not None:
                checkpoint.append(result)
            done[ep.id] = result
        bar.update(len(chunk))
    bar.close()
    return [done[ep.id] for ep in episodes]


def run(config: RunConfig, out: str | Path | None = None, *, progress: bool = True,
        score_cache: str | Path | None = None) -> RunResult:
    """Run every method on the same episodes of every task; write the run folder if ``out`` is given.

    With ``out``, finished episodes are checkpointed beside it, so a killed run started again with the same
    config resumes where it stopped. ``score_cache``: sqlite file of LM scores reused across runs.
    """
    config.check()
    tasks = [load_task(t, text_field=config.text_field, label_field=config.label_field) for t in config.tasks]
    prompts = {t.name: _prompt_for(t, config.prompt) for t in tasks}
    episodes = {t.name: sample_episodes(t, config.episodes) for t in tasks}
    meta_options = learners.MethodContext(task=None, seed=0, options=config.options).run_wide(MetaTrainOptions)
    get_lm = _LazyLM(config.model, score_cache)
    world = distributed.init()  # under accelerate launch / torchrun: this process runs every world.size-th episode
    progress = progress and world.main
    ckpt = Checkpoint(out, config_key(config.to_dict())) if out is not None and world.main else None
    embeddings: dict[str, Any] = {}  # this run's embedding caches, shared by its baselines
    blocks: list[list[EpisodeResult]] = []
    described: dict[str, Any] = {}
    meta_hashes: dict[str, str] = {}
    query_fields: dict[str, tuple[str, ...]] = {}
    for task in tasks:
        for method in config.methods:
            caps = learners.entry(method).capabilities
            query_fields[method] = caps.query_fields
            if task.spec.type == "generation" and not caps.open_answers:
                continue  # open-answer tasks have no label set for a classifier to pick from
            eps = [e for e in episodes[task.name] if e.shots >= caps.min_shots]
            ctx = learners.MethodContext(
                task=task, seed=config.episodes.seed, options=config.options, get_lm=get_lm,
                get_prompt=lambda t=task: prompts[t.name],
                train_episodes=lambda t=task: training_episodes(t, episodes[t.name], meta_options,
                                                                config.episodes.seed),
                embeddings=embeddings, progress=progress)
            learner = learners.make(method, ctx)
            if isinstance(learner, learners.MetaLearner):
                assert ctx.train_episodes is not None
                train = ctx.train_episodes()
                learner.meta_train(train)
                meta_hashes[f"{task.name}/{method}"] = episodes_hash(train)
            described[f"{task.name}/{method}"] = dict(learner.describe())
            per_call = learner.episodes_per_call() if caps.batches_episodes else 1  # type: ignore[attr-defined]
            blocks.append(run_method(learner, distributed.shard(eps, world), progress=progress,
                                     desc=f"{task.name} {method}", checkpoint=ckpt, per_call=per_call))
    results = [r for block in distributed.gather(blocks, world) for r in block]
    manifest = {
        "iclkit_summary_version": SUMMARY_VERSION,
        "config": config.to_dict(),
        "versions": versions(),
        "model": dict(get_lm.lm.describe()) if get_lm.lm is not None else None,
        "tasks": {t.name: {"source": t.source, "file": t.spec.file, "n_train": len(t.train), "n_test": len(t.test),
                           "labels": list(t.labels)} for t in tasks},
        "prompts": {name: {"name": p.name, "hash": p.hash, "file": p.file} for name, p in prompts.items()},
        "episodes_hash": {name: episodes_hash(eps) for name, eps in episodes.items()},
        "methods": described,
        "meta_train_episodes_hash": meta_hashes,
        "seed": config.episodes.seed,
        "processes": world.size,
    }
    summary = summarize(results, seed=config.episodes.seed, query_fields=query_fields)
    comparison = (compare(results, reference=config.reference, seed=config.episodes.seed)
                  if config.reference in config.methods else [])
    result = RunResult(config, episodes, results, manifest, summary, comparison)
    if out is not None and world.main:
        save(result, Path(out))
        if ckpt is not None:
            ckpt.remove()
    return result


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
    from iclkit.export.plots import write_plots  # matplotlib loads only when a run folder is written

    with staged_dir(out) as tmp:
        write_jsonl(tmp / "records.jsonl", result.records())
        write_episodes([e for eps in result.episodes.values() for e in eps], tmp / "episodes.jsonl")
        write_json(tmp / "manifest.json", result.manifest)
        write_json(tmp / "summary.json", {"version": SUMMARY_VERSION, "results": result.summary})
        (tmp / "summary.md").write_text(result.table() + "\n", encoding="utf-8")
        if result.comparison:
            write_json(tmp / "comparison.json", {"version": COMPARISON_VERSION, "reference": result.config.reference,
                                                 "rows": result.comparison})
        write_plots(result.summary, tmp / "plots")


def evaluate(tasks: str | Sequence[str] = RunConfig.tasks, *, model: str | ModelSpec = ModelSpec.name,
             shots: Sequence[int] = EpisodeConfig.shots, n_episodes: int = EpisodeConfig.n_episodes,
             n_way: int | None = None, n_query: int = EpisodeConfig.n_query, seed: int = EpisodeConfig.seed,
             methods: Sequence[str] = RunConfig.methods, prompt: str | None = None, out: str | Path | None = None,
             progress: bool = True, score_cache: str | Path | None = None, **options: Any) -> RunResult:
    """Python entry point: ``iclkit.evaluate("sst2", shots=[0, 4], n_episodes=20, methods=DEFAULT_METHODS)``.

    ``options`` are learner and run-wide options by name (``normalize="mean"``, ``knn_k=10``, ``embed="minilm"``);
    an unknown name is an IclkitError listing the valid ones. Defaults are RunConfig's, as for the CLI."""
    given: dict[str, Any] = {"tasks": (tasks,) if isinstance(tasks, str) else tuple(tasks), "shots": tuple(shots),
                             "n_episodes": n_episodes, "n_way": n_way, "n_query": n_query, "seed": seed,
                             "methods": tuple(methods), "prompt": prompt, **options}
    config = RunConfig.from_options(given)
    if isinstance(model, ModelSpec):
        config = RunConfig(**{**vars(config), "model": model})
    else:
        config = RunConfig(**{**vars(config), "model": ModelSpec(**{**vars(config.model), "name": model})})
    return run(config, out, progress=progress, score_cache=score_cache)
