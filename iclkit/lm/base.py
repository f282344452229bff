"""The LM interface: batch log-likelihood of continuations, and greedy generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` after ``prefix + context``.

    The three parts are tokenized separately and concatenated, so a prefix shared by many requests (an episode's
    demonstrations) has one tokenization, and every scoring path sees exactly the same token ids.
    """

    prefix: str
    context: str
    continuation: str


@dataclass(frozen=True)
class Loglikelihood:
    """Sum of the continuation tokens' log-probabilities, their count, and whether greedy decoding yields them."""

    logprob: float
    n_tokens: int
    greedy: bool


@dataclass(frozen=True)
class GenerationRequest:
    """Greedy continuation of ``prefix + context``, cut at the first stop string."""

    prefix: str
    context: str
    max_new_tokens: int = 16
    stop: tuple[str, ...] = ("\n",)


@runtime_checkable
class LM(Protocol):
    """Batch-first LM: results come back in the order of the requests."""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]: ...

    def describe(self) -> Mapping[str, Any]:
        """Everything about the model that moves a score: id, revision, weights hash, dtype, quantization."""
        ...
