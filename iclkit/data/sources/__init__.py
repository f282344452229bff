"""Task sources by kind: a task file's ``source: {kind: ...}`` names a loader registered here.

A loader takes the task's spec and its source mapping and returns the task's train and test examples, or raises
``SourceUnavailable`` when it cannot be used here (no benchmark folder, offline hub), so the next listed source is
tried. Adding a kind: one module ending in ``register_source("kind")(load)``, plus a line in ``_SOURCES``' built-in map for the
kinds that ship with iclkit (their modules, and what they import, load only when a task uses them).

This module imports only the spec values, never a source's module, so ``iclkit.data.tasks`` can ask it which kinds
exist (to check a task file) and load a task's examples without an import cycle.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from iclkit.data.spec import TaskData, TaskSpec
from iclkit.errors import IclkitError
from iclkit.registry import Registry

Loader = Callable[[TaskSpec, Mapping[str, Any]], TaskData]
# kind → module that registers it on import
_SOURCES: Registry[Loader] = Registry("source kind", "source", {
    "data_dir": "iclkit.data.sources.data_dir",
    "local": "iclkit.data.sources.local",
    "hub": "iclkit.data.sources.hub",
    "builtin": "iclkit.data.sources.builtin",
})


class SourceUnavailable(Exception):
    """This source cannot be used here (missing folder, offline hub); the next listed source is tried."""


def register_source(kind: str) -> Callable[[Loader], Loader]:
    """Decorator: ``@register_source("mykind") def load(spec, src) -> TaskData``."""
    return lambda loader: _SOURCES.add(kind, loader)


def unregister_source(kind: str) -> None:
    """Forget a kind registered outside iclkit (a test's, a plugin's); iclkit's own kinds stay."""
    if kind in _SOURCES.lazy:
        raise ValueError(f"{kind!r} is one of iclkit's own source kinds")
    _SOURCES.remove(kind)


def available_sources() -> list[str]:
    """Every kind a task file may name: registered ones and iclkit's own."""
    return _SOURCES.names()


def source_loader(kind: str, *, file: str | None = None) -> Loader:
    """The loader registered as ``kind``, importing iclkit's module for it on first use."""
    return _SOURCES.get(kind, file=file)


def load_examples(spec: TaskSpec) -> TaskData:
    """Try the spec's sources in order; the first available one is used."""
    reasons = []
    for src in spec.sources:
        try:
            data = source_loader(str(src.get("kind")), file=spec.file)(spec, src)
        except SourceUnavailable as e:
            reasons.append(str(e))
            continue
        if not data.train or not data.test:
            raise IclkitError("task needs both a train and a test part", file=spec.file)
        return data
    raise IclkitError(
        f"no source of task {spec.name!r} is available here: " + "; ".join(reasons),
        file=spec.file,
        hint="offline, use a local copy: set ICLKIT_DATA_DIR to the benchmark data folder, pass a .jsonl/.csv "
        "file as --task, or run `iclkit tasks` for the built-in offline tasks",
    )
