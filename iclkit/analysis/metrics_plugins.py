"""Users' own metrics: Hugging Face ``evaluate`` modules loaded from a local script or folder.

iclkit's own metrics come from scikit-learn and scipy (stats.py); a plugged-in metric is the user's code, loaded
only from a path they name (``iclkit leaderboard --metric my_metric.py``), never from a task or prompt file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from iclkit.errors import IclkitError


def load_metric(path: str | Path) -> Any:
    """An ``evaluate`` metric from a local ``.py`` script, or a folder holding ``<folder name>.py``."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".py") and not (p.is_dir() and (p / f"{p.name}.py").is_file()):
        raise IclkitError("not an evaluate metric script (.py) or a folder holding <folder>/<folder>.py",
                          file=str(p), field="metric")
    import evaluate

    try:
        return evaluate.load(str(p.resolve()))
    except Exception as e:  # noqa: BLE001 - the user's module can fail in any way; report it as their error
        raise IclkitError(f"cannot load metric: {type(e).__name__}: {e}".splitlines()[0], file=str(p),
                          field="metric") from None


def compute(metric: Any, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Numeric results of ``metric.compute`` on one episode; keys other than the metric's name get it as prefix."""
    try:
        result = metric.compute(predictions=list(predictions), references=list(references)) or {}
    except Exception as e:  # noqa: BLE001 - as above: a failing user metric is reported, not a crash of iclkit
        raise IclkitError(f"metric {metric.name!r} failed: {type(e).__name__}: {e}".splitlines()[0],
                          field="metric") from None
    out = {}
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key if key == metric.name else f"{metric.name}.{key}"] = float(value)
    return out
