"""What a run asks of its language model, counted per LM call: requests, and the tokens they put through the model.

A real run counts through ``MeteredLM``, which sits between the learners and the model and counts into a
``Meter``; a dry run
(``iclkit.runner.dryrun``) puts the same meter in front of a model that answers without scoring, so both count the
very calls the runner makes, by the backend's own tokenization:

- ``tokens``: what the prefix-shared path scores (``iclkit.lm.prefix``): each distinct prompt prefix of a call once
  (less its last token), then every distinct row continuing it (that token, the context, the continuation less its
  last token). ``None`` when the backend does not say how it splits a request (it has no ``parts``).
- ``full_tokens``: every request's lead, prefix, context and continuation (``LM.token_counts``), which a harness
  scoring each request as one full prompt would run.

Counts are per call as the runner batches them (one episode per call on a CPU, several on a GPU, whose calls can
share a zero-shot prompt between episodes), so they are the work of this run on this device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

from iclkit.lm.base import GenerationRequest, Loglikelihood, LoglikelihoodRequest
from iclkit.lm.prefix import plan as prefix_plan


@dataclass(frozen=True)
class Usage:
    """LM work of some calls: log-likelihood calls, requests and tokens (see the module docstring), and greedy
    generations with their prompt tokens and the most tokens they may generate (``max_new_tokens`` summed)."""

    calls: int = 0
    requests: int = 0
    tokens: int | None = 0
    full_tokens: int = 0
    generation_calls: int = 0
    generations: int = 0
    generation_tokens: int = 0
    max_new_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        tokens = None if self.tokens is None or other.tokens is None else self.tokens + other.tokens
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)
                        if f.name != "tokens"}, tokens=tokens)

    def to_dict(self) -> dict[str, Any]:
        """The counts by name, as the manifest's ``lm_usage`` and the checkpoint store them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Usage":
        """Inverse of ``to_dict`` (other keys, such as a manifest row's task and method, are ignored)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def total(usages: Sequence[Usage]) -> Usage:
    """The sum of ``usages``."""
    out = Usage()
    for u in usages:
        out = out + u
    return out


def loglikelihood_usage(backend: Any, requests: Sequence[LoglikelihoodRequest]) -> Usage:
    """One log-likelihood call of ``requests`` to ``backend``, counted by its own tokenization."""
    if not requests:
        return Usage()
    parts = getattr(backend, "parts", None)
    tokens = None
    if callable(parts):
        groups = prefix_plan(parts(requests))
        tokens = sum(len(g.shared) + sum(len(row.tokens) for row in g.rows) for g in groups)
    return Usage(calls=1, requests=len(requests), tokens=tokens, full_tokens=sum(backend.token_counts(requests)))


def generation_usage(backend: Any, requests: Sequence[GenerationRequest]) -> Usage:
    """One generation call: its prompts' tokens (lead included, as ``generate`` sends them) and its token budget."""
    if not requests:
        return Usage()
    prompts = backend.token_counts([LoglikelihoodRequest(r.prefix, r.context, "") for r in requests])
    return Usage(generation_calls=1, generations=len(requests), generation_tokens=sum(prompts),
                 max_new_tokens=sum(r.max_new_tokens for r in requests))


class Meter:
    """LM usage per ``bucket`` (the runner names the job it runs), and what was used since the last ``take``."""

    def __init__(self) -> None:
        self.bucket: str = ""
        self.totals: dict[str, Usage] = {}
        self._since = Usage()

    def count(self, usage: Usage) -> None:
        """A call just made."""
        self._since = self._since + usage
        self.credit(usage)

    def credit(self, usage: Usage) -> None:
        """Add ``usage`` to the current bucket (also the usage of episodes read back from a checkpoint)."""
        self.totals[self.bucket] = self.totals.get(self.bucket, Usage()) + usage

    def take(self) -> Usage:
        """The usage of the calls since the last ``take``."""
        out, self._since = self._since, Usage()
        return out


class MeteredLM:
    """``lm`` with every log-likelihood and generation call counted into ``meter``.

    ``backend`` is the model that says how a request is tokenized (``lm`` itself, or the model behind a score
    cache: a request read back from the cache is still one the run asked for). Everything else goes straight to
    ``lm``."""

    def __init__(self, lm: Any, meter: Meter, backend: Any = None):
        self.lm = lm
        self.meter = meter
        self.backend = backend if backend is not None else lm

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """``lm``'s results, the call counted first."""
        self.meter.count(loglikelihood_usage(self.backend, requests))
        return self.lm.loglikelihood(requests)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """``lm``'s generations, the call counted first."""
        self.meter.count(generation_usage(self.backend, requests))
        return self.lm.generate(requests)

    def __getattr__(self, name: str) -> Any:
        # the rest of the protocol (tokenizer, chat template, hidden states, device, describe) is the model's own;
        # dunder lookups (copy, pickle) and lookups before __init__ has set ``lm`` are not forwarded
        if name.startswith("__") or "lm" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.lm, name)
