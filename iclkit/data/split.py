"""The one held-out split: a deterministic (train, test) division of a single file or word list."""

from __future__ import annotations

import random
from typing import Any, Sequence

from iclkit.errors import IclkitError
from iclkit.types import Example


def holdout(examples: Sequence[Example], fraction: float, *,
            stratify: bool = True) -> tuple[list[Example], list[Example]]:
    """Split into (train, test) with ``round(fraction * n)`` test examples per label (``stratify``) or overall.

    Deterministic (one fixed-seed ``random.Random`` shared by the groups, visited in sorted label order). Each part
    lists the groups in that order, each group in input order; unstratified, both parts keep the input order.
    """
    rng = random.Random("iclkit-holdout")
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.label if stratify else "", []).append(e)
    train: list[Example] = []
    test: list[Example] = []
    for key in sorted(groups):
        group = groups[key]
        order = list(range(len(group)))
        rng.shuffle(order)
        chosen = set(order[:int(round(fraction * len(group)))])
        test += [e for i, e in enumerate(group) if i in chosen]
        train += [e for i, e in enumerate(group) if i not in chosen]
    return train, test


def holdout_fraction(value: Any, *, file: str | None) -> float:
    """A task file's ``holdout:`` value, checked to be a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise IclkitError(f"must be a number between 0 and 1 (the share of examples held out as queries), "
                          f"got {value!r}", file=file, field="source.holdout")
    return float(value)
