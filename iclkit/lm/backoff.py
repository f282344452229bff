"""Length-bucketed batches that shrink on CUDA out-of-memory, for the length of one call only."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import torch

from iclkit.errors import IclkitError
from iclkit.lm.prefix import batches

Unit = TypeVar("Unit")


def run_batched(run: Callable[[list[Unit]], None], units: Sequence[Unit], lengths: Sequence[int], rows: int,
                tokens_per_row: int, overhead: int | None = None) -> None:
    """Call ``run`` on length-bucketed batches of ``units`` (at most ``rows`` rows, ``rows * tokens_per_row`` padded
    tokens; ``overhead``: see ``prefix.batches``); on CUDA out-of-memory halve ``rows`` and rebatch the failed and
    remaining units.

    The smaller size lasts for this call only: the next call starts at ``rows`` again, so one long outlier episode
    does not slow every later call of the process (a failed first batch costs one forward pass per halving).
    """
    queue = batches(lengths, rows, rows * tokens_per_row, overhead)
    while queue:
        batch = queue.pop(0)
        try:
            run([units[i] for i in batch])
        except torch.cuda.OutOfMemoryError:
            if rows == 1:
                raise IclkitError("out of GPU memory with one sequence per batch",
                                  hint="use a smaller model, --quantization 8bit/4bit, or fewer shots") from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            rows = max(1, rows // 2)
            rest = [i for b in [batch] + queue for i in b]
            queue = [[rest[j] for j in b] for b in batches([lengths[i] for i in rest], rows, rows * tokens_per_row,
                                                                overhead)]
