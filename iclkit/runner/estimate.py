"""A short measurement of this machine's speed on the chosen model, for a dry run's estimated wall time.

Each rate is measured on the run's own work (a few of its planned LM calls, a few of its texts to embed), after
one warm-up call that pays for first-call allocations, and never through the score or embedding caches: so it is
the speed of this machine, under its load now, on prompts of the run's shape. It is an estimate of the run's time,
not a measurement of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from iclkit.lm.base import GenerationRequest, LoglikelihoodRequest
from iclkit.runner.usage import loglikelihood_usage

T = TypeVar("T")
BUDGET_S = 10.0  # stop timing further calls once this much was measured, after at least MIN_SAMPLES calls
MIN_SAMPLES = 2  # one call alone may be an outlier (the runner alternates shot counts between calls)


@dataclass(frozen=True)
class Rate:
    """``work`` units (tokens, generations or texts) done in ``seconds`` over ``samples`` timed calls."""

    work: float
    seconds: float
    samples: int

    @property
    def per_second(self) -> float:
        """Units per second."""
        return self.work / self.seconds if self.seconds > 0 else float("inf")

    def time_for(self, work: float) -> float:
        """Seconds for ``work`` units at this rate."""
        return work / self.per_second if work else 0.0


def spread(items: Sequence[T], n: int) -> list[T]:
    """``n`` items evenly spaced over ``items`` (all of them if there are no more than ``n``)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else [items[0]]


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def scoring_rate(backend: Any, calls: Sequence[Sequence[LoglikelihoodRequest]], *, shared: bool,
                 n: int = 4) -> Rate | None:
    """Tokens per second of ``backend.loglikelihood`` on up to ``n`` of the run's calls, counting the tokens its
    scoring path runs (``shared``: after prefix sharing; else full prompts)."""
    if not calls:
        return None
    backend.loglikelihood(calls[0])  # warm-up
    work = seconds = 0.0
    done = 0
    for call in spread(calls[1:] or calls, n):
        used = loglikelihood_usage(backend, call)
        work += used.tokens if shared and used.tokens is not None else used.full_tokens
        seconds += _timed(backend.loglikelihood, call)
        done += 1
        if seconds > BUDGET_S and done >= MIN_SAMPLES:
            break
    return Rate(work, seconds, done)


def generation_rate(backend: Any, calls: Sequence[Sequence[GenerationRequest]], *, n: int = 2) -> Rate | None:
    """Greedy generations per second of ``backend.generate`` on up to ``n`` of the run's calls."""
    if not calls:
        return None
    backend.generate(calls[0][:1])  # warm-up
    work = seconds = 0.0
    done = 0
    for call in spread(calls, n):
        work += len(call)
        seconds += _timed(backend.generate, call)
        done += 1
        if seconds > BUDGET_S and done >= MIN_SAMPLES:
            break
    return Rate(work, seconds, done)


def embedding_rate(encoder: Any, texts: Sequence[str], *, n: int = 32) -> Rate | None:
    """Texts per second of ``encoder`` (called directly: nothing enters the embedding cache) on up to ``n`` texts."""
    if not texts:
        return None
    encoder(list(texts[:2]))  # warm-up (and, for a sentence encoder, its loading)
    sample = spread(texts, n)
    return Rate(len(sample), _timed(encoder, sample), 1)


def duration(seconds: float) -> str:
    """``seconds`` in words: ``45 s``, ``3 min 20 s``, ``2 h 5 min``."""
    s = round(seconds)
    if s < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
