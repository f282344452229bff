"""What a dry run found (``iclkit.runner.dryrun``): the work and cost per task × method × prompt, meta-training,
texts to embed, the rates measured on this machine, and the text ``iclkit run --dry-run`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from iclkit.runner.estimate import Rate, duration
from iclkit.runner.execute import usage_bucket
from iclkit.runner.plan import RunPlan
from iclkit.runner.usage import Usage
from iclkit.shots import shots_line


@dataclass(frozen=True)
class JobCost:
    """One task × method × prompt: distinct episodes, episode runs (over label probes and orders), queries, and
    the LM work of its calls."""

    task: str
    method: str
    outputs: tuple[str, ...]
    prompt: str | None
    episodes: int
    runs: int
    queries: int
    usage: Usage


@dataclass(frozen=True)
class MetaCost:
    """Meta-training on one task: its episodes (of which meta-validation), protocol, and the learners trained."""

    task: str
    protocol: str
    episodes: int
    validation: int
    methods: tuple[str, ...]


@dataclass(frozen=True)
class DryRun:
    """A run's plan and cost: rows per task × method × prompt, meta-training, texts to embed (``embed_missing``:
    not yet in the embedding cache), and the rates measured on this machine (None where nothing was measured)."""

    plan: RunPlan = field(repr=False, compare=False)
    jobs: tuple[JobCost, ...]
    meta: tuple[MetaCost, ...]
    embedder: str | None
    embed_texts: int
    embed_missing: int
    model: Mapping[str, Any] | None
    episodes_per_call: int | None
    planning_s: float
    load_s: float | None  # loading the model, when the dry run loaded it after planning
    scoring: Rate | None = None
    generation: Rate | None = None
    embedding: Rate | None = None

    def usage(self) -> dict[str, Usage]:
        """LM usage per job bucket (``usage_bucket``), as a real run's manifest reports it (``lm_usage``)."""
        return {usage_bucket(j.task, j.method, j.prompt): j.usage for j in self.jobs if j.usage != Usage()}

    @property
    def shared(self) -> bool:
        """Whether the model scores with prefix sharing (its ``scoring_path``)."""
        return (self.model or {}).get("scoring_path", "prefix-shared") == "prefix-shared"

    def estimate_s(self) -> dict[str, float]:
        """Estimated seconds per part of the work that was measured: scoring, generation, embedding."""
        total = sum((j.usage for j in self.jobs), Usage())
        tokens = total.tokens if self.shared and total.tokens is not None else total.full_tokens
        out = {}
        if self.scoring is not None:
            out["scoring"] = self.scoring.time_for(tokens)
        if self.generation is not None:
            out["generation"] = self.generation.time_for(total.generations)
        if self.embedding is not None:
            out["embedding"] = self.embedding.time_for(self.embed_missing)
        return out

    def text(self) -> str:
        """The dry run as printed by ``iclkit run --dry-run``."""
        return render(self)


def _n(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def render(dry: "DryRun") -> str:
    """Markdown-ish text: what is planned, what it asks of the model, and how long that should take here."""
    lines = ["Dry run: nothing was scored and nothing written (the same command without --dry-run runs it).", ""]
    if dry.model is not None:
        m = dry.model
        lines.append(f"Model: {m.get('model')} ({m.get('backend', 'hf')}, {m.get('dtype')}, {m.get('device')}); "
                     f"scoring path: {m.get('scoring_path', 'n/a')}; episodes per LM call: {dry.episodes_per_call}")
    else:
        lines.append("Model: not needed (no learner of this run uses it)")
    for task, plan in dry.plan.shot_plans.items():
        shots = sorted({e.shots for e in dry.plan.episodes[task]})
        lines.append(shots_line(task, {**plan.to_dict(), "shots_run": shots}))
    lines += ["", "| task | method | prompt | episodes | runs | queries | LM calls | requests | tokens scored | "
                  "full-prompt tokens | generations (prompt tokens) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for j in dry.jobs:
        u = j.usage
        gens = f"{u.generations:,} ({u.generation_tokens:,})" if u.generations else "0"
        lines.append(f"| {j.task} | {', '.join(j.outputs) or j.method} | {j.prompt or '–'} | {j.episodes:,} | "
                     f"{j.runs:,} | {j.queries:,} | {u.calls + u.generation_calls:,} | {u.requests:,} | "
                     f"{_n(u.tokens)} | {u.full_tokens:,} | {gens} |")
    t = sum((j.usage for j in dry.jobs), Usage())
    gens = f"{t.generations:,} ({t.generation_tokens:,})" if t.generations else "0"
    lines.append(f"| total | | | | {sum(j.runs for j in dry.jobs):,} | {sum(j.queries for j in dry.jobs):,} | "
                 f"{t.calls + t.generation_calls:,} | {t.requests:,} | {_n(t.tokens)} | {t.full_tokens:,} | {gens} |")
    lines += ["", "runs: episodes × label probes × demonstration orders; tokens scored: after prefix sharing (each "
                  "episode's demonstrations once per call); full-prompt tokens: every request scored as a whole prompt, "
                  "as a harness without prefix sharing would."]
    if t.tokens and t.full_tokens:
        lines.append(f"Prefix sharing scores {t.tokens / t.full_tokens:.1%} of the full-prompt tokens.")
    if dry.meta:
        steps = dry.plan.meta_options.meta_steps
        lines += ["", f"Meta-training (outer steps: {steps if steps is not None else 'each learner its own'}):"]
        lines += [f"- {m.task}: {m.episodes:,} episodes ({m.episodes - m.validation:,} training, {m.validation:,} "
                  f"meta-validation), {m.protocol}; trains {', '.join(m.methods)}" for m in dry.meta]
    if dry.embedder is not None:
        lines += ["", f"Texts to embed ({dry.embedder}): {dry.embed_texts:,} distinct, {dry.embed_missing:,} not yet "
                      "in the embedding cache"]
    lines += ["", *_estimate(dry)]
    return "\n".join(lines)


def _estimate(dry: "DryRun") -> list[str]:
    parts = dry.estimate_s()
    head = "Estimated wall time (an estimate from a short measurement on this machine now, not a measurement of " \
           "the run):"
    if not parts:
        what = "nothing to measure" if dry.model is None else "no measurement asked for"
        return [f"Estimated wall time: none ({what})."]
    lines = [f"{head} ~{duration(sum(parts.values()))}"]
    t = sum((j.usage for j in dry.jobs), Usage())
    if dry.scoring is not None:
        kind = "tokens scored" if dry.shared and t.tokens is not None else "full-prompt tokens"
        lines.append(f"- LM scoring: {dry.scoring.per_second:,.0f} "
                     f"{kind}/s, measured on {dry.scoring.samples} of the run's {t.calls:,} calls "
                     f"({dry.scoring.work:,.0f} tokens in {dry.scoring.seconds:.2f} s) → ~{duration(parts['scoring'])}")
    if dry.generation is not None:
        lines.append(f"- generation: {dry.generation.per_second:,.2f} answers/s, measured on "
                     f"{dry.generation.work:,.0f} answers → ~{duration(parts['generation'])}")
    if dry.embedding is not None:
        lines.append(f"- embedding: {dry.embedding.per_second:,.1f} texts/s, measured on {dry.embedding.work:,.0f} "
                     f"texts → ~{duration(parts['embedding'])}")
    left = [f"planning ({duration(dry.planning_s)} here)"]
    if dry.load_s is not None:
        left.append(f"loading the model ({duration(dry.load_s)} here)")
    if dry.meta:
        left.append("meta-training")
    lines.append(f"- not included: {', '.join(left)}; a score cache (--score-cache) would serve requests already "
                 "scored")
    return lines
