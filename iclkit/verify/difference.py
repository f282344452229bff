"""One thing in a run folder that no longer matches what recomputing it gives, named down to the field."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Difference:
    """``field`` of a record (task, method, episode, query) or of a file line (``file``, ``line``) differs:
    ``recorded`` is what the run wrote, ``found`` what verification recomputed; ``settings`` are the verification
    settings under which it differs (none: a hash check, made once)."""

    field: str
    recorded: Any
    found: Any
    task: str | None = None
    method: str | None = None
    episode_id: str | None = None
    query_id: str | None = None
    file: str | None = None
    line: int | None = None
    settings: tuple[str, ...] = ()

    def where(self) -> str:
        """E.g. ``task movie-sentiment, method icl, episode movie-sentiment/k1/e0, query polarity-3`` or
        ``episodes.jsonl:3``."""
        parts = [f"{self.file}:{self.line}" if self.file and self.line else self.file or ""]
        parts += [f"{name} {value}" for name, value in (("task", self.task), ("method", self.method),
                                                         ("episode", self.episode_id), ("query", self.query_id))
                  if value is not None]
        return ", ".join(p for p in parts if p)

    def text(self) -> str:
        """One line: where, which field, recorded and found values (and under which settings)."""
        under = f" (under {', '.join(self.settings)})" if self.settings else ""
        return (f"{self.where()}: field '{self.field}': recorded {_short(self.recorded)}, "
                f"found {_short(self.found)}{under}")

    def key(self) -> tuple[Any, ...]:
        """The same difference seen under several settings shares this key."""
        return (self.field, self.task, self.method, self.episode_id, self.query_id, self.file, self.line,
                json.dumps(self.recorded, sort_keys=True, default=str))

    def under(self, settings: tuple[str, ...]) -> "Difference":
        """This difference, found under ``settings``."""
        return replace(self, settings=settings)

    def to_dict(self) -> dict[str, Any]:
        """As verify.json lists it (unset places left out)."""
        out = {k: getattr(self, k) for k in ("task", "method", "episode_id", "query_id", "file", "line")
               if getattr(self, k) is not None}
        return {**out, "field": self.field, "recorded": self.recorded, "found": self.found,
                **({"settings": list(self.settings)} if self.settings else {})}


def merged(differences: list[Difference]) -> list[Difference]:
    """One entry per difference, with every setting it was found under (first-seen order)."""
    by_key: dict[tuple[Any, ...], Difference] = {}
    for d in differences:
        seen = by_key.get(d.key())
        by_key[d.key()] = d if seen is None else seen.under(tuple(dict.fromkeys(seen.settings + d.settings)))
    return list(by_key.values())


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
