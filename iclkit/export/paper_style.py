"""How paper figures look: column widths, fonts, formats, and the method families that group their contents.

A figure is drawn at a paper's column width — ``single`` (3.3 in) or ``double`` (6.9 in) — under ``STYLE``, where
no text is smaller than 7 pt. Families come from families.json (plain data, beside this module): the panels of
the learning curves and the order of a forest plot's rows. A user's own learner joins one with
``register_family("my-method", "metric-based")``; a method in none is drawn as "other".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal, Mapping, Sequence

from iclkit.export.plots import ImageFormat

Width = Literal["single", "double"]
WIDTHS: Mapping[Width, float] = {"single": 3.3, "double": 6.9}  # inches: one and two columns of a paper
SUFFIX: Mapping[Width, str] = {"single": "1col", "double": "2col"}
MIN_FONT_PT = 7.0
PNG_DPI = 300
FORMATS: tuple[ImageFormat, ...] = ("png", "svg", "pdf")
STYLE = {"font.size": 7.5, "axes.titlesize": 8, "axes.labelsize": 7.5, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 7, "figure.titlesize": 8.5, "figure.labelsize": 7.5, "axes.linewidth": 0.6,
         "xtick.major.width": 0.6, "ytick.major.width": 0.6, "lines.linewidth": 1.2, "lines.markersize": 3.5}

OTHER = "other"
_DATA = json.loads((Path(__file__).with_name("families.json")).read_text(encoding="utf-8"))
_ORDER: list[str] = list(_DATA["order"])
_FAMILY: dict[str, str] = dict(_DATA["methods"])


def family(method: str) -> str:
    """The family a method is drawn with ("other" if it has none)."""
    return _FAMILY.get(method, OTHER)


def families() -> list[str]:
    """Every family, in drawing order ("other" last)."""
    return [f for f in _ORDER if f != OTHER] + [OTHER]


def register_family(method: str, name: str) -> None:
    """Draw ``method`` in family ``name`` (a new family goes after the built-in ones, before "other")."""
    _FAMILY[method] = name
    if name not in _ORDER:
        _ORDER.append(name)


def unregister_family(method: str) -> None:
    """Undo ``register_family`` for ``method`` (tests, notebooks): a built-in method goes back to its file entry,
    and a family added for it alone goes away."""
    _FAMILY.pop(method, None)
    if method in _DATA["methods"]:
        _FAMILY[method] = _DATA["methods"][method]
    _ORDER[:] = [f for f in _ORDER if f in _DATA["order"] or f in _FAMILY.values()]  # drop emptied new families


def method_order(method: str) -> tuple[int, str]:
    """Sort key: family, then name."""
    return families().index(family(method)), method


def legend_columns(labels: Sequence[str], width_in: float) -> int:
    """The most columns a legend of these 7-pt ``labels`` (which may span lines) can have within ``width_in``
    inches, filled column by column as matplotlib fills them; each entry is a handle, a gap and ~0.052 in per
    character (an estimate: no renderer is needed, and erring wide only costs a column)."""
    for ncols in range(len(labels), 1, -1):
        per_column = math.ceil(len(labels) / ncols)
        columns = [labels[i:i + per_column] for i in range(0, len(labels), per_column)]
        longest = [max(len(line) for s in col for line in s.split("\n")) for col in columns]
        if sum(0.5 + 0.052 * n for n in longest) <= width_in * 0.95:
            return len(columns)
    return 1
