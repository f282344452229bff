"""The leaderboard's rows as CSV, one line per row."""

from __future__ import annotations

import csv
import io

from iclkit.export.formats import register_format
from iclkit.export.leaderboard import ROW_FIELDS, SPREAD_FIELDS, Leaderboard


def to_csv(lb: Leaderboard) -> str:
    """One CSV line per row (lists, e.g. ``meta_tasks``, joined by ``;``); the spread across prompts
    (``n_prompts``, ``prompt_min``, ``prompt_max``, ``prompt_std``) when a row ran under several; users' metrics as
    ``<name>``, ``<name>_ci_low``, ``<name>_ci_high`` columns."""
    extra = lb.metric_names()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fields = ROW_FIELDS + (SPREAD_FIELDS if any(r.get("n_prompts") for r in lb.rows) else ())
    writer.writerow([*fields, *[f"{m}{s}" for m in extra for s in ("", "_ci_low", "_ci_high")]])
    for r in lb.rows:
        cells = ["" if r.get(f) is None else ";".join(r[f]) if isinstance(r[f], list) else r[f] for f in fields]
        for m in extra:
            v = r.get("metrics", {}).get(m, {})
            cells += ["" if v.get(k) is None else v[k] for k in ("value", "ci_low", "ci_high")]
        writer.writerow(cells)
    return buf.getvalue()


register_format("csv")(to_csv)
