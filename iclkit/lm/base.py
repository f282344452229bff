"""The LM interface: batch log-likelihood, greedy generation, and what ICL and the LM embedder need besides.

Everything outside ``iclkit/lm`` reaches a model only through ``LM``; a backend is any object with these members
(see ``iclkit.lm.registry`` for how one is registered and chosen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # torch is imported by the backends, not by whoever only names the interface
    import torch

Pooling = Literal["mean", "last"]


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` after ``prefix + context``.

    The token ids are those of the joined text, cut at the part boundaries (a token spanning one goes with the later
    part), so a prefix shared by many requests (an episode's demonstrations) has one tokenization, no tokenizer's
    start-of-text rule (a SentencePiece prefix space) lands mid-prompt, and every scoring path sees the same ids.
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
    """Batch-first LM: results come back in the order of the requests, whatever order the backend runs them in."""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """One result per request. A score does not depend on the other requests of the call, on the batch size or
        on the number of threads (up to float rounding), so a run can batch episodes together freely."""
        ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy (deterministic) text after each prompt, without the stop string and what follows it."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens: the ids a request's parts are scored with."""
        ...

    def token_counts(self, requests: Sequence[LoglikelihoodRequest]) -> list[int]:
        """Tokens each request puts in the model's window (lead, prefix, context, continuation), as ``loglikelihood``
        tokenizes them and checks them against ``context_length``: so ``--shots auto`` sizes prompts by the ids the
        model is sent, not by their parts tokenized one by one (which differ by a token or so at each boundary)."""
        ...

    @property
    def lead(self) -> Sequence[int]:
        """Token ids the backend puts in front of every prompt (a BOS token; none for SmolLM2, one for Llama), as the
        tokenizer adds them to an empty text. A prompt whose own tokens already start with them (a chat template that
        writes the BOS string itself: Llama 3, Gemma) gets none: see ``lead_for``."""
        ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """``messages`` (``{"role", "content"}``) in the model's chat format, as text ending where the assistant's
        reply begins; ``IclkitError`` (field ``chat``) for a model without a chat template."""
        ...

    def hidden_states(self, texts: Sequence[str], *, layer: int = -1, pooling: Pooling = "mean",
                      max_tokens: int = 256) -> "torch.Tensor":
        """[len(texts), dim] float32 CPU vectors: layer ``layer`` (0 = token embeddings, -1 = last) pooled over each
        text's first ``max_tokens`` tokens (mean, or the last token). Each text's vector is independent of the
        others in the call (no padding leaks in); a layer out of range is an ``IclkitError`` (field
        ``embed_layer``)."""
        ...

    @property
    def context_length(self) -> int:
        """Most tokens one prompt plus its continuation may have; 0 when the model does not say."""
        ...

    @property
    def device(self) -> str:
        """Where the model runs, as torch names it: ``"cpu"``, ``"cuda:0"``, ..."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """Everything about the model that moves a score: id, revision, weights hash, dtype, quantization, backend."""
        ...


def lead_for(lead: Sequence[int], first: Sequence[int]) -> list[int]:
    """The tokens to put before a prompt whose own tokens begin with ``first``: ``lead``, or none when ``first``
    already starts with it. A chat template that writes BOS itself would otherwise get a second BOS, which shifts
    every position and is a prompt the model never saw in training. Backends and ``--shots auto`` both count this."""
    return [] if lead and list(first[:len(lead)]) == list(lead) else list(lead)
