"""Re-scored records against the run's own, field by field.

Records are matched on (task, method, episode, query, prompt, label probe, order). Every field the re-score writes
is compared: numbers (``scores`` and ``probs`` per label, per-query extras such as ``label_mass``) within the
tolerance, everything else (``prediction``, ``correct``, ``episode_hash``, ``prompt_hash``, ...) exactly. Both sides
are the records as written, at their 6 decimals.

A label score of a prompted method is an LM log-prob: per token under ``--normalize mean``, summed over the label's
tokens under ``sum`` (iclkit's default; not divided by the token count); it must stay within the tolerance, and
``max_abs_delta`` is the largest |Δ| among them. A baseline's score is on its own scale (ProtoNet: minus a squared
distance, often in the hundreds, where float32 keeps about 7 significant digits), so it is compared relatively:
|Δ| / max(1, |recorded|) within the tolerance, the largest being ``max_rel_delta``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

from iclkit.results import Record
from iclkit.verify.difference import Difference

Key = tuple[str, str, str, str, Any, str, int]
_KEY_FIELDS = ("task", "method", "episode_id", "query_id", "prompt", "labels", "permutation")


def key_of(rec: Mapping[str, Any]) -> Key:
    """What identifies a record within a run."""
    return (rec["task"], rec["method"], rec["episode_id"], rec["query_id"], rec.get("prompt"),
            rec.get("labels", "gold"), int(rec.get("permutation", 0)))


@dataclass
class MethodCount:
    """One method's share of a comparison."""

    compared: int = 0
    mismatched_predictions: int = 0
    max_abs_delta: float | None = None  # largest |Δ| of a label score
    max_rel_delta: float | None = None  # … relative to the score (a method whose scores are on their own scale)

    def to_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "identical": self.compared - self.mismatched_predictions,
                "mismatched_predictions": self.mismatched_predictions, "max_abs_delta": rounded(self.max_abs_delta),
                **({"max_rel_delta": rounded(self.max_rel_delta)} if self.max_rel_delta is not None else {})}


def rounded(x: float | None) -> float | None:
    """A difference to 3 significant digits, as verify.json shows it (pass/fail uses the exact value)."""
    return None if x is None else float(f"{x:.3g}")


@dataclass(frozen=True)
class Comparison:
    """How one setting's re-score compares with the run: records compared, predictions that differ, the largest
    |Δ| of an LM log-prob score and the largest relative Δ of an own-scale score, per method, and every difference
    (a missing record counts as one)."""

    compared: int
    mismatched_predictions: int
    max_abs_delta: float | None
    max_rel_delta: float | None
    by_method: Mapping[str, MethodCount]
    differences: tuple[Difference, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        """Identical predictions, every field equal, every number within the tolerance."""
        return not self.differences


def compare(recorded: Sequence[Record], fresh: Iterable[Mapping[str, Any]], tolerance: float,
            methods: Iterable[str], in_sample: Callable[[str, str], bool],
            own_scale: Collection[str] = ()) -> Comparison:
    """Compare ``fresh`` records with those of ``recorded`` that the re-score should have produced: methods in
    ``methods`` on episodes ``in_sample(task, episode_id)`` accepts; ``own_scale``: methods whose scores are not
    log-probs (compared relatively)."""
    wanted = set(methods)
    mine = {key_of(d): d for d in (r.to_dict() for r in recorded
                                   if r.method in wanted and in_sample(r.task, r.episode_id))}
    counts: dict[str, MethodCount] = {}
    diffs: list[Difference] = []
    seen: set[Key] = set()
    for new in fresh:
        k = key_of(new)
        seen.add(k)
        place = dict(zip(("task", "method", "episode_id", "query_id"), k[:4]))
        old = mine.get(k)
        if old is None:
            diffs.append(Difference("record", None, "re-scored, not in records.jsonl", **place))
            continue
        count = counts.setdefault(new["method"], MethodCount())
        count.compared += 1
        for name, value in new.items():
            if name in _KEY_FIELDS:
                continue
            for path, a, b in _leaves(name, old.get(name, _MISSING), value):
                delta = _delta(a, b)
                score = path.startswith("scores.") and delta is not None and math.isfinite(delta)
                if score:
                    count.max_abs_delta = max(count.max_abs_delta or 0.0, delta)
                if score and new["method"] in own_scale:
                    delta = delta / max(1.0, abs(float(a)))
                    count.max_rel_delta = max(count.max_rel_delta or 0.0, delta)
                if not _same(a, b, delta, tolerance):
                    diffs.append(Difference(path, None if a is _MISSING else a, b, **place))
                    if name == "prediction":
                        count.mismatched_predictions += 1
    for k, old in mine.items():
        if k not in seen:
            diffs.append(Difference("record", "in records.jsonl", "not re-scored",
                                    **dict(zip(("task", "method", "episode_id", "query_id"), k[:4]))))
    absolute = [c.max_abs_delta for m, c in counts.items() if m not in own_scale and c.max_abs_delta is not None]
    relative = [c.max_rel_delta for c in counts.values() if c.max_rel_delta is not None]
    return Comparison(sum(c.compared for c in counts.values()),
                      sum(c.mismatched_predictions for c in counts.values()), max(absolute, default=None),
                      max(relative, default=None), dict(sorted(counts.items())), tuple(diffs))


_MISSING = object()


def _leaves(name: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """``(path, recorded, fresh)`` pairs: a mapping compared key by key (``scores.positive``), else the value."""
    if isinstance(b, Mapping) and isinstance(a, Mapping):
        return [(f"{name}.{k}", a.get(k, _MISSING), b.get(k, _MISSING)) for k in dict.fromkeys([*b, *a])]
    return [(name, a, b)]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _delta(a: Any, b: Any) -> float | None:
    if not (_number(a) and _number(b)):
        return None
    return 0.0 if a == b else abs(float(a) - float(b))  # equal infinities: no difference


def _same(a: Any, b: Any, delta: float | None, tolerance: float) -> bool:
    if delta is not None:
        return delta <= tolerance
    return a is not _MISSING and b is not _MISSING and a == b


# The largest |Δ| a re-scored number may differ by, by the precision the run's model computed in: float32 sums
# reordered by another batch or thread count move a log-prob by ~1e-6; half precisions by up to ~1e-2 (the records
# keep 6 decimals).
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
QUANTIZED_TOLERANCE = 5e-2


def default_tolerance(model: Mapping[str, Any] | None) -> tuple[float, str]:
    """The tolerance for a run whose manifest describes its model as ``model`` (None: no LM, float32 features), and
    why."""
    model = model or {}
    quantization = str(model.get("quantization") or "none")
    if quantization != "none":
        return QUANTIZED_TOLERANCE, f"{quantization} quantization"
    dtype = str(model.get("dtype") or "float32").removeprefix("torch.")
    if dtype in TOLERANCE:
        return TOLERANCE[dtype], dtype
    return TOLERANCE["float32"], f"{dtype}, as float32"


def log_prob_scores(described: Mapping[str, Any]) -> bool:
    """Whether a method's ``scores`` are LM log-probs, from its manifest entry (a prompted method's ``normalize``)."""
    return described.get("normalize") in ("sum", "mean")


def score_unit(described: Mapping[str, Any]) -> str:
    """What a method's ``scores`` are, from its manifest entry (``normalize`` for ICL)."""
    normalize = described.get("normalize")
    if normalize == "mean":
        return "log-prob per token (normalize mean)"
    if normalize == "sum":
        return "log-prob summed over the label's tokens (normalize sum; not divided by the token count)"
    return "the method's own score (not an LM log-prob; compared relatively)"
