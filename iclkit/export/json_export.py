"""The leaderboard as JSON that follows the versioned schema in export/schema/leaderboard.schema.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iclkit.export.formats import register_format
from iclkit.export.leaderboard import Leaderboard


def to_json(lb: Leaderboard) -> str:
    """``Leaderboard.to_dict()`` as indented JSON."""
    return json.dumps(lb.to_dict(), indent=2, ensure_ascii=False) + "\n"


def schema() -> dict[str, Any]:
    """The JSON Schema that ``Leaderboard.to_dict()`` follows."""
    return json.loads((Path(__file__).parent / "schema" / "leaderboard.schema.json").read_text(encoding="utf-8"))


register_format("json")(to_json)
