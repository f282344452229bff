"""Learner registry: methods are registered by name with a factory; heavy modules import only when chosen."""

from __future__ import annotations

import importlib
from typing import Callable

from iclkit.learners.base import Adapted, Learner, MetaLearner, MethodContext

Factory = Callable[[MethodContext], Learner]
_FACTORIES: dict[str, Factory] = {}
# name → module that registers it on import (baselines live in the top-level baselines/ folder)
_LAZY: dict[str, str] = {
    "icl": "iclkit.learners.icl",
    "protonet": "iclkit.baselines.protonet",
    "protonet-proj": "iclkit.baselines.protonet",
    "maml": "iclkit.baselines.maml",
    "fomaml": "iclkit.baselines.maml",
    "mann": "iclkit.baselines.mann",
    "knn": "iclkit.baselines.knn",
    "linear": "iclkit.baselines.linear",
    "transformer": "iclkit.baselines.transformer",
}


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator: ``@register("protonet") def make(ctx) -> Learner``."""

    def deco(factory: Factory) -> Factory:
        _FACTORIES[name] = factory
        return factory

    return deco


def available() -> list[str]:
    return sorted(set(_FACTORIES) | set(_LAZY))


def make(name: str, ctx: MethodContext) -> Learner:
    """Build the learner registered as ``name``."""
    from iclkit.errors import IclkitError

    if name not in _FACTORIES and name in _LAZY:
        importlib.import_module(_LAZY[name])
    if name not in _FACTORIES:
        raise IclkitError(f"unknown method {name!r}", field="methods", hint=f"available: {', '.join(available())}")
    return _FACTORIES[name](ctx)


__all__ = ["Adapted", "Learner", "MetaLearner", "MethodContext", "register", "available", "make"]
