"""Where iclkit finds things: its shipped task and prompt files, the benchmark data folder, and its cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

PACKAGE_DIR = Path(__file__).resolve().parent
Shipped = Literal["tasks", "prompts"]
# Installed, the top-level tasks/ and prompts/ folders become the data packages iclkit.task_files and
# iclkit.prompt_files (names no module can clash with); in a source checkout they sit beside iclkit/.
_INSTALLED = {"tasks": "task_files", "prompts": "prompt_files"}


def shipped_dir(kind: Shipped) -> Path:
    """Folder of iclkit's shipped ``tasks`` or ``prompts`` YAML files, installed or in a source checkout."""
    for candidate in (PACKAGE_DIR / _INSTALLED[kind], PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"iclkit's {kind}/ folder is missing from the installation")


def data_dir() -> Path | None:
    """The benchmark data folder: $ICLKIT_DATA_DIR, else ../shared/data when it exists."""
    env = os.environ.get("ICLKIT_DATA_DIR")
    if env:
        return Path(env)
    for base in (Path.cwd(), PACKAGE_DIR.parent):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def cache_dir() -> Path:
    """``$ICLKIT_CACHE``, else ``~/.cache/iclkit``: converted models, embeddings, meta-trained weights, scores."""
    root = os.environ.get("ICLKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "iclkit")
    return Path(root)
