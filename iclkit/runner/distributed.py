"""Scale-out: shard episodes across the processes of ``accelerate launch`` / ``torchrun`` and gather their results.

Every process samples the same episodes (sampling is seeded), runs episodes ``rank, rank + world, ...`` of each
(task, method) block, and the results are gathered back into the one-process order, so a run's records do not depend
on the number of processes. Only rank 0 writes the run folder. Results travel as pickled Python objects over a
gloo process group (CPU and GPU alike, across nodes too): they are small, and gloo needs no GPU.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

T = TypeVar("T")

# A rank that finishes early waits in the final gather for the slowest one; a whole run's imbalance must fit here.
GATHER_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (``size == 1``: a plain single-process run)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The process layout set by the launcher (``RANK`` / ``WORLD_SIZE``), without initializing anything."""
    return World(rank=int(os.environ.get("RANK", "0")), size=int(os.environ.get("WORLD_SIZE", "1")))


def init() -> World:
    """Join the launcher's process group once (gloo), and pin this process to its local GPU when there is one."""
    w = world()
    if w.size == 1:
        return w
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            # "cuda" (device=auto) then means this process's own GPU, not every process on cuda:0.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group("gloo", rank=w.rank, world_size=w.size, timeout=GATHER_TIMEOUT)
        atexit.register(_close)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def _close() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], w: World) -> list[T]:
    """This process's share of ``items``: every ``size``-th one, starting at ``rank``."""
    return list(items[w.rank::w.size])


def gather(blocks: Sequence[Sequence[T]], w: World) -> list[list[T]]:
    """Every process's ``shard`` results of each block, put back in the order of the unsharded items."""
    if w.size == 1:
        return [list(b) for b in blocks]
    import torch.distributed as dist

    parts: list[list[list[T]] | None] = [None] * w.size
    dist.all_gather_object(parts, [list(b) for b in blocks])
    return [merge_shards([p[j] for p in parts]) for j in range(len(blocks))]  # type: ignore[index]


def merge_shards(pieces: Sequence[Sequence[T]]) -> list[T]:
    """Inverse of ``shard``: the shards of ranks 0..W−1 of one block, interleaved back into the block's order."""
    n = sum(len(p) for p in pieces)
    return [pieces[i % len(pieces)][i // len(pieces)] for i in range(n)]
