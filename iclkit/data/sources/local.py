"""``kind: local``: JSONL/CSV files named relative to the task file (or a held-out part of one file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from iclkit.data.rows import read_examples
from iclkit.data.sources import register_source
from iclkit.data.split import holdout, holdout_fraction
from iclkit.data.spec import TaskData, TaskSpec
from iclkit.errors import IclkitError


def load_files(spec: TaskSpec, src: Mapping[str, Any], base: Path) -> TaskData:
    """``train`` (and ``test``, else a stratified ``holdout`` share of train) files under ``base``."""
    if not isinstance(src.get("train"), str):
        raise IclkitError("a file source needs train: FILE", file=spec.file, field="source.train")
    train_path = base / src["train"]
    train = read_examples(train_path, spec, "train", src.get("format"))
    if src.get("test"):
        test_path = base / str(src["test"])
        test = read_examples(test_path, spec, "test", src.get("format"))
        where = f"{train_path} + {test_path}"
    else:
        fraction = holdout_fraction(src.get("holdout", 0.5), file=spec.file)
        train, test = holdout(train, fraction, stratify=True)
        where = f"{train_path} (held-out {src.get('holdout', 0.5)} for queries)"
    return TaskData(spec, tuple(train), tuple(test), where)


def load_local(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    """Files beside the task file (the working directory for a spec built in code)."""
    base = Path(spec.file).parent if spec.file else Path.cwd()
    return load_files(spec, src, base)


register_source("local")(load_local)
