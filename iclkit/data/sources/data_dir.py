"""``kind: data_dir``: files in a folder of the benchmark data folder (``$ICLKIT_DATA_DIR``)."""

from __future__ import annotations

from typing import Any, Mapping

from iclkit.data.sources import SourceUnavailable, register_source
from iclkit.data.sources.local import load_files
from iclkit.data.spec import TaskData, TaskSpec
from iclkit.errors import IclkitError
from iclkit.paths import data_dir


def load_data_dir(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    """``dir`` inside the benchmark data folder; unavailable (not an error) when that folder is missing."""
    if not isinstance(src.get("dir"), str):
        raise IclkitError("a data_dir source needs dir: FOLDER", file=spec.file, field="source.dir")
    root = data_dir()
    if root is None or not (root / src["dir"]).is_dir():
        raise SourceUnavailable(f"benchmark data folder {src['dir']!r} not found (set ICLKIT_DATA_DIR)")
    return load_files(spec, src, root / src["dir"])


register_source("data_dir")(load_data_dir)
