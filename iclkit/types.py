"""The values that flow through iclkit: Example → Episode → Prediction → EpisodeResult.

All are frozen dataclasses; nothing here does I/O or holds model state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

TaskType = Literal["classification", "generation"]


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON form of ``obj`` (first ``n`` hex digits)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


@dataclass(frozen=True)
class Example:
    """One labelled input. ``fields`` holds the input text fields (e.g. text, or premise+hypothesis)."""

    id: str
    fields: Mapping[str, str]
    label: str

    def __hash__(self) -> int:
        return hash((self.id, self.label, tuple(sorted(self.fields.items()))))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "fields": dict(self.fields), "label": self.label}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Example":
        return cls(id=str(d["id"]), fields=dict(d["fields"]), label=str(d["label"]))


def content_key(e: Example) -> tuple[tuple[str, str], ...]:
    """What an example says (its fields, sorted), without id or label: two examples with the same text share it."""
    return tuple(sorted(e.fields.items()))


@dataclass(frozen=True)
class Episode:
    """An N-way K-shot episode. ``support`` is in demonstration order; ``labels`` are the episode's classes."""

    task: str
    index: int
    shots: int
    seed: int
    labels: tuple[str, ...]
    support: tuple[Example, ...]
    query: tuple[Example, ...]
    hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", stable_hash(self._content()))

    @property
    def id(self) -> str:
        return f"{self.task}/k{self.shots}/e{self.index}"

    def _content(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "index": self.index,
            "shots": self.shots,
            "seed": self.seed,
            "labels": list(self.labels),
            "support": [e.to_dict() for e in self.support],
            "query": [e.to_dict() for e in self.query],
        }

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hash": self.hash, **self._content()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Episode":
        ep = cls(
            task=str(d["task"]),
            index=int(d["index"]),
            shots=int(d["shots"]),
            seed=int(d["seed"]),
            labels=tuple(d["labels"]),
            support=tuple(Example.from_dict(e) for e in d["support"]),
            query=tuple(Example.from_dict(e) for e in d["query"]),
        )
        if d.get("hash") and d["hash"] != ep.hash:
            raise ValueError(f"episode {ep.id}: stored hash {d['hash']} != content hash {ep.hash}")
        return ep


def episodes_hash(episodes: "list[Episode] | tuple[Episode, ...]") -> str:
    """One hash over a list of episodes, in order."""
    return stable_hash([e.hash for e in episodes])


@dataclass(frozen=True)
class Prediction:
    """A method's answer for one query. ``scores`` are per-label scores (log-likelihoods for ICL)."""

    query_id: str
    gold: str
    predicted: str
    correct: bool
    scores: Mapping[str, float] = field(default_factory=dict)
    probs: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EpisodeResult:
    """All predictions of one method on one episode."""

    episode_id: str
    episode_hash: str
    task: str
    method: str
    shots: int
    labels: tuple[str, ...]
    predictions: tuple[Prediction, ...]
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        if not self.predictions:
            return float("nan")
        return sum(p.correct for p in self.predictions) / len(self.predictions)
