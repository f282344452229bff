"""The leaderboard's rows as CSV, one line per row."""

from __future__ import annotations

import csv
import io

from iclkit.export.formats import register_format
from iclkit.export.leaderboard import ROW_FIELDS, Leaderboard


def to_csv(lb: Leaderboard) -> str:
    """One CSV line per row; users' metrics as ``<name>``, ``<name>_ci_low``, ``<name>_ci_high`` columns."""
    extra = lb.metric_names()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*ROW_FIELDS, *[f"{m}{s}" for m in extra for s in ("", "_ci_low", "_ci_high")]])
    for r in lb.rows:
        cells = ["" if r[f] is None else r[f] for f in ROW_FIELDS]
        for m in extra:
            v = r.get("metrics", {}).get(m, {})
            cells += ["" if v.get(k) is None else v[k] for k in ("value", "ci_low", "ci_high")]
        writer.writerow(cells)
    return buf.getvalue()


register_format("csv")(to_csv)
