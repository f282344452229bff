"""Which part of a run is re-scored: a seeded sample of each task's episodes, run by every learner that needs no
meta-training.

Episodes are sampled per task (not per method), so every re-scored method answers the same episodes and a
comparison across methods stays paired. A learner that meta-trains before it sees its episodes is left out: its
records are only hash-checked, since re-running it means re-running its meta-training (a run of its own).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from iclkit import learners
from iclkit.errors import IclkitError
from iclkit.runner.plan import RunPlan
from iclkit.types import Episode

DEFAULT_EPISODES = 8  # per task: every method re-scores these (all their queries, prompts, probes and orders)
META_TRAINS = "meta-trains before its episodes (re-running it is a run of its own); its records are hash-checked only"


@dataclass(frozen=True)
class Sample:
    """The episodes re-scored, by task (ids, in the run's order), drawn with ``random.Random(seed)``; ``per_task``:
    how many were asked for (0: all)."""

    seed: int
    per_task: int
    episodes: Mapping[str, tuple[str, ...]]

    def has(self, episode: Episode) -> bool:
        """Whether ``episode`` (or a probed or re-ordered version of it: same id) is in the sample."""
        return episode.id in self.episodes.get(episode.task, ())

    def to_dict(self) -> dict[str, object]:
        """As verify.json records it."""
        return {"seed": self.seed, "episodes_per_task": self.per_task or "all",
                "episodes": {task: list(ids) for task, ids in self.episodes.items()}}


def check_count(per_task: int) -> int:
    """``per_task`` if it is a whole number ≥ 0, else an IclkitError."""
    if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 0:
        raise IclkitError(f"must be a whole number ≥ 0 (0: every episode), got {per_task!r}", field="sample")
    return per_task


def draw(episodes: Mapping[str, Sequence[Episode]], per_task: int, seed: int) -> Sample:
    """``per_task`` episodes of each task (all of them when it has no more, or ``per_task`` is 0), one seeded RNG
    over the tasks in the run's order."""
    check_count(per_task)
    rng = random.Random(seed)
    out = {}
    for task, eps in episodes.items():
        ids = [e.id for e in eps]
        chosen = set(rng.sample(ids, per_task)) if 0 < per_task < len(ids) else set(ids)
        out[task] = tuple(i for i in ids if i in chosen)
    return Sample(seed, per_task, out)


def rescorable(methods: Sequence[str]) -> tuple[str, ...]:
    """The ``methods`` whose registration does not declare meta-training (planning only these leaves the episodes
    as they are, and draws no meta-training episodes)."""
    return tuple(m for m in methods if not learners.entry(m).capabilities.meta_trains)


def declared_meta_learners(methods: Sequence[str]) -> dict[str, str]:
    """The ``methods`` whose registration says they meta-train, with why they are not re-scored."""
    return {m: META_TRAINS for m in methods if m not in rescorable(methods)}


def restrict(plan: RunPlan, sample: Sample) -> RunPlan:
    """``plan`` cut down to the sampled episodes (and to learners not declared as meta-learners); jobs keep their
    order and point at the kept learners."""
    kept, index = [], {}
    for i, lp in enumerate(plan.learners):
        if learners.entry(lp.method).capabilities.meta_trains:
            continue
        eps = tuple(e for e in lp.episodes if sample.has(e))
        if eps:
            index[i] = len(kept)
            kept.append(replace(lp, episodes=eps))
    jobs = []
    for job in plan.jobs:
        eps = tuple(e for e in job.episodes if sample.has(e))
        if job.learner in index and eps:
            jobs.append(replace(job, learner=index[job.learner], episodes=eps))
    return replace(plan, learners=tuple(kept), jobs=tuple(jobs))
