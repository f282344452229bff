"""Running methods on episodes: Task → Episodes → Learner.adapt(support) → predict(query) → RunResult."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from iclkit import learners
from iclkit.runner import distributed
from iclkit.runner.checkpoint import Checkpoint, config_key
from iclkit.analysis.paired import COMPARISON_VERSION, compare, comparison_table
from iclkit.episodes import EpisodeConfig, sample_episodes, write_episodes
from iclkit.errors import IclkitError
from iclkit.lm.loading import ModelSpec, load_lm
from iclkit.metatrain import training_episodes
from iclkit.prompts import PromptTemplate, load_prompt
from iclkit.analysis.summary import SUMMARY_VERSION, markdown_table, records, summarize
from iclkit.files import staged_dir, write_json, write_jsonl
from iclkit.data.tasks import TaskData, load_task
from iclkit.types import Episode, EpisodeResult, episodes_hash

DEFAULT_TASKS = ("movie-sentiment", "country-capital", "past-tense", "nationality")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    model: ModelSpec = ModelSpec()
    episodes: EpisodeConfig = EpisodeConfig()
    methods: tuple[str, ...] = ("icl",)
    prompt: str | None = None  # overrides each task's own prompt
    options: Mapping[str, Any] = field(default_factory=dict)  # method options: normalize, chat, ...
    text_field: str | None = None
    label_field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d


@dataclass
class RunResult:
    """Results of a run: every episode result, the summary rows, and the manifest."""

    config: RunConfig
    episodes: dict[str, list[Episode]]
    results: list[EpisodeResult]
    manifest: dict[str, Any]
    summary: list[dict[str, Any]] = field(default_factory=list)
    comparison: list[dict[str, Any]] = field(default_factory=list)  # paired differences vs ICL

    def table(self) -> str:
        if not self.comparison:
            return markdown_table(self.summary)
        return (markdown_table(self.summary) + "\n\nPaired difference vs ICL (same episodes):\n\n"
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
               desc: str = "", checkpoint: Checkpoint | None = None) -> list[EpisodeResult]:
    """Adapt to each episode's support and predict its queries (episodes finished in ``checkpoint`` are reused).

    A learner with ``predict_episodes`` (ICL) gets ``episodes_per_call()`` episodes at a time, so the LM can batch
    queries across episodes; results are the same as one episode at a time."""
    done = {ep.id: checkpoint.get(learner.name, ep) for ep in episodes} if checkpoint is not None else {}
    todo = [ep for ep in episodes if done.get(ep.id) is None]
    per_call = learner.episodes_per_call() if hasattr(learner, "predict_episodes") else 1
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
    tasks = [load_task(t, text_field=config.text_field, label_field=config.label_field) for t in config.tasks]
    prompts = {t.name: _prompt_for(t, config.prompt) for t in tasks}
    episodes = {t.name: sample_episodes(t, config.episodes) for t in tasks}
    get_lm = _LazyLM(config.model, score_cache)
    world = distributed.init()  # under accelerate launch / torchrun: this process runs every world.size-th episode
    progress = progress and world.main
    ckpt = Checkpoint(out, config_key(config.to_dict())) if out is not None and world.main else None
    blocks: list[list[EpisodeResult]] = []
    described: dict[str, Any] = {}
    meta_hashes: dict[str, str] = {}
    for task in tasks:
        for method in config.methods:
            if task.spec.type == "generation" and method != "icl":
                continue  # baselines are classifiers; open-answer tasks are ICL only
            # Baselines need at least one demonstration per class; 0-shot is ICL only.
            eps = [e for e in episodes[task.name] if method == "icl" or e.shots > 0]
            ctx = learners.MethodContext(
                task=task, seed=config.episodes.seed, options={"progress": progress, **config.options},
                get_lm=get_lm, get_prompt=lambda t=task: prompts[t.name],
                train_episodes=lambda t=task: training_episodes(t, episodes[t.name], config.options,
                                                                config.episodes.seed))
            learner = learners.make(method, ctx)
            if isinstance(learner, learners.MetaLearner):
                assert ctx.train_episodes is not None
                train = ctx.train_episodes()
                learner.meta_train(train)
                meta_hashes[f"{task.name}/{method}"] = episodes_hash(train)
            described[f"{task.name}/{method}"] = dict(learner.describe())
            blocks.append(run_method(learner, distributed.shard(eps, world), progress=progress,
                                     desc=f"{task.name} {method}", checkpoint=ckpt))
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
    result = RunResult(config, episodes, results, manifest, summarize(results, seed=config.episodes.seed),
                       compare(results, seed=config.episodes.seed) if "icl" in config.methods else [])
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
            write_json(tmp / "comparison.json", {"version": COMPARISON_VERSION, "reference": "icl",
                                                 "rows": result.comparison})
        write_plots(result.summary, tmp / "plots")


def evaluate(tasks: str | Sequence[str] = DEFAULT_TASKS, *, model: str | ModelSpec = "smollm2-135m-instruct",
             shots: Sequence[int] = (0, 1, 4), n_episodes: int = 20, n_way: int | None = None, n_query: int = 16,
             seed: int = 0, methods: Sequence[str] = ("icl",), prompt: str | None = None,
             out: str | Path | None = None, progress: bool = True, score_cache: str | Path | None = None,
             **options: Any) -> RunResult:
    """Python entry point: ``iclkit.evaluate("sst2", shots=[0, 4], n_episodes=20)``."""
    spec = model if isinstance(model, ModelSpec) else ModelSpec(name=model)
    config = RunConfig(
        tasks=(tasks,) if isinstance(tasks, str) else tuple(tasks), model=spec,
        episodes=EpisodeConfig(shots=tuple(shots), n_episodes=n_episodes, n_way=n_way, n_query=n_query, seed=seed),
        methods=tuple(methods), prompt=prompt, options=options)
    return run(config, out, progress=progress, score_cache=score_cache)
