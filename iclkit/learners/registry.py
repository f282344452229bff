"""Learner registry: a name → (factory, capabilities, options) entry per method.

Built-in learners are listed lazily (name → module that registers it on import), so a run imports only the
learners it uses. Adding a learner is one file that ends with one ``register(...)`` line, and one line in ``_ENTRIES``' built-in map
if it ships with iclkit (a user's own learner just calls ``register`` before the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from iclkit.learners.base import Capabilities, Learner, MethodContext
from iclkit.learners.options import OptionSpec, check_names, run_wide_names
from iclkit.registry import Registry

Factory = Callable[[MethodContext], Learner]


@dataclass(frozen=True)
class Entry:
    """A registered learner: how to build it, what it can do, which options it takes."""

    name: str
    factory: Factory
    capabilities: Capabilities
    options: OptionSpec | None = None


# name → module that registers it on import (baselines live in the top-level baselines/ folder)
_ENTRIES: Registry[Entry] = Registry("method", "methods", {
    "icl": "iclkit.learners.icl",
    "icl+contextual": "iclkit.learners.icl",
    "icl+dcpmi": "iclkit.learners.icl",
    "icl+batch": "iclkit.learners.icl",
    "protonet": "iclkit.baselines.protonet",
    "protonet-proj": "iclkit.baselines.protonet",
    "maml": "iclkit.baselines.maml",
    "fomaml": "iclkit.baselines.maml",
    "mann": "iclkit.baselines.mann",
    "knn": "iclkit.baselines.knn",
    "linear": "iclkit.baselines.linear",
    "transformer": "iclkit.baselines.transformer",
    "knn-bottleneck": "iclkit.baselines.bottleneck",
    "protonet-bottleneck": "iclkit.baselines.bottleneck",
})


def register(name: str, *, capabilities: Capabilities = Capabilities(),
             options: OptionSpec | None = None) -> Callable[[Factory], Factory]:
    """Decorator: ``@register("knn", options=OptionSpec(KNN, ("k", "mode"), prefix="knn")) def make(ctx)``."""

    def deco(factory: Factory) -> Factory:
        _ENTRIES.add(name, Entry(name, factory, capabilities, options))
        return factory

    return deco


def unregister(name: str) -> None:
    """Remove a learner registered at run time (tests, notebooks)."""
    _ENTRIES.remove(name)


def available() -> list[str]:
    """Every learner name: registered ones and built-in ones not imported yet."""
    return _ENTRIES.names()


def entry(name: str) -> Entry:
    """The registered learner ``name`` (imports its module on first use)."""
    return _ENTRIES.get(name)


def make(name: str, ctx: MethodContext) -> Learner:
    """Build the learner registered as ``name``."""
    return entry(name).factory(ctx)


def option_names() -> list[str]:
    """Every option a run accepts: the run-wide ones and every learner's (built-in learners are imported)."""
    names = set(run_wide_names())
    for name in available():
        spec = entry(name).options
        if spec is not None:
            names.update(spec.names())
    return sorted(names)


def check_options(given: list[str] | tuple[str, ...], *, file: str | None = None) -> None:
    """Fail on an unknown option name (a typo), naming the valid ones."""
    if given:
        check_names(given, option_names(), file=file)
