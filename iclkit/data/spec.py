"""What a task is: its spec (what a task file says) and its loaded data. Values only; reading task files is
``iclkit.data.tasks``, reading their examples ``iclkit.data.sources``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from iclkit.types import Example, TaskType


@dataclass(frozen=True)
class TaskSpec:
    """What a task file says. ``sources`` are tried in order; the first that is available is used."""

    name: str
    type: TaskType
    inputs: tuple[str, ...]
    labels: tuple[str, ...]  # empty: inferred from the data (classification) or open answers (generation)
    prompt: str  # a registered prompt name, or the absolute path of a prompt .yaml file
    sources: tuple[Mapping[str, Any], ...]
    label_field: str = "label"
    description: str = ""
    file: str | None = None  # where the spec came from, for error messages
    extra: Mapping[str, Any] = field(default_factory=dict)
    corpus: str = ""  # the source corpus; tasks that share one share texts ('' → the task's own name)
    prompts: tuple[str, ...] = ()  # every prompt a run uses (template spread); () → just ``prompt``
    content_free: tuple[str, ...] | None = None  # contextual calibration's content-free inputs (None → the default)

    @property
    def corpus_name(self) -> str:
        """The corpus this task's texts come from (its own name unless the task file says ``corpus:``)."""
        return self.corpus or self.name


@dataclass(frozen=True)
class TaskData:
    """A loaded task: its spec and the train (demonstration pool) and test (query pool) examples."""

    spec: TaskSpec
    train: tuple[Example, ...]
    test: tuple[Example, ...]
    source: str  # description of the source actually used

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def labels(self) -> tuple[str, ...]:
        if self.spec.labels:
            return self.spec.labels
        return tuple(sorted({e.label for e in self.train} | {e.label for e in self.test}))
