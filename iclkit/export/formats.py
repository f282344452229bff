"""Export format registry: each format is a function ``Leaderboard -> str`` registered by name.

Built-in formats live one per module, each ending with its one ``register_format(...)`` line, and are listed
lazily (name → module that registers it on import), so a heavy one (html pulls in matplotlib) imports only when
chosen. A user's own format is one function and ``register_format("tsv")(to_tsv)`` before ``render`` or the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from iclkit.files import atomic_write
from iclkit.registry import Registry

if TYPE_CHECKING:  # the CLI lists formats when it builds its parser: no numpy/scipy for that
    from iclkit.export.leaderboard import Leaderboard

Exporter = Callable[["Leaderboard"], str]
# name → module that registers it on import
_FORMATS: Registry[Exporter] = Registry("format", "format", {
    "md": "iclkit.export.markdown",
    "csv": "iclkit.export.csv_table",
    "json": "iclkit.export.json_export",
    "html": "iclkit.export.html_report",
})


def register_format(name: str) -> Callable[[Exporter], Exporter]:
    """Decorator: ``@register_format("md") def to_markdown(lb: Leaderboard) -> str``."""
    return lambda fn: _FORMATS.add(name, fn)


def unregister_format(name: str) -> None:
    """Remove a format registered at run time (tests, notebooks); unknown names are ignored."""
    _FORMATS.remove(name)


def available_formats() -> list[str]:
    """Names of every format ``render`` accepts, sorted."""
    return _FORMATS.names()


def exporter(fmt: str) -> Exporter:
    """The function registered as ``fmt`` (its module is imported on first use)."""
    return _FORMATS.get(fmt)


def render(lb: Leaderboard, fmt: str) -> str:
    """The leaderboard as text in format ``fmt`` (md, csv, json, html, or one you registered)."""
    return exporter(fmt)(lb)


def write(lb: Leaderboard, fmt: str, out: str | Path) -> Path:
    """Render the leaderboard and write it to ``out`` atomically; returns the path."""
    return atomic_write(out, render(lb, fmt))
