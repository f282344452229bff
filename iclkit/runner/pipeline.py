"""A run as three stages passing plain values: ``plan`` (what it will do) → ``execute`` (results) → ``collect``
(manifest, summary, comparisons); ``save`` writes the run folder. ``evaluate`` is the keyword-argument entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from iclkit.episodes import EpisodeConfig
from iclkit.lm import ModelSpec
from iclkit.runner.checkpoint import remove_checkpoint
from iclkit.runner.collect import RunResult, collect, save
from iclkit.runner.config import RunConfig
from iclkit.runner.execute import execute
from iclkit.runner.model import ModelHandle
from iclkit.runner.plan import plan


def run(config: RunConfig, out: str | Path | None = None, *, progress: bool = True,
        score_cache: str | Path | None = None) -> RunResult:
    """Run every method on the same episodes of every task; write the run folder if ``out`` is given.

    With ``out``, finished episodes are checkpointed beside it, so a killed run started again with the same
    config resumes where it stopped. ``score_cache``: sqlite file of LM scores reused across runs.
    """
    planned = plan(config, model=ModelHandle(config.model, score_cache))
    executed = execute(planned, out, progress=progress)
    result = collect(planned, executed)
    if out is not None and executed.main:
        save(result, Path(out))
        remove_checkpoint(out)
    return result


def evaluate(tasks: str | Sequence[str] = RunConfig.tasks, *, model: str | ModelSpec = ModelSpec.name,
             shots: Sequence[int] | str = EpisodeConfig.shots, n_episodes: int = EpisodeConfig.n_episodes,
             n_way: int | None = None, n_query: int = EpisodeConfig.n_query, seed: int = EpisodeConfig.seed,
             methods: Sequence[str] = RunConfig.methods, prompt: str | Sequence[str] | None = None,
             out: str | Path | None = None,
             progress: bool = True, score_cache: str | Path | None = None, **options: Any) -> RunResult:
    """Python entry point: ``iclkit.evaluate("sst2", shots=[0, 4], n_episodes=20, methods=DEFAULT_METHODS)``.

    ``shots``: counts, or ``"auto"`` / ``"0,4,max"`` (sized to the model's context window; docs/learners-and-protocols.md,
    "Episodes");
    ``prompt`` names one prompt or several (``"a,b"`` or a list; default: the task's own ``prompts``), and
    ``calibration="none,contextual,dcpmi,batch"`` adds ICL's calibrated outputs (docs/fair-icl.md).
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
