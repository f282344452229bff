"""The settings a sample is re-scored under: each differs from the run in one thing that must not move a score.

Every setting recomputes every score: none reads the score cache (``--score-cache``) or the on-disk embedding cache,
so ``no-score-cache`` (the run's batch size, threads and one process) is the plain re-score the others are varied
from. ``batch-size`` re-scores one row per batch (no row shares a padded batch with another: the largest change of
batch composition a run can see), or 2 rows when the run itself used 1; ``threads`` sets another torch thread count
(1, or 2 when this process runs on 1); ``processes`` shards the episodes over two processes as ``torchrun`` does
(needs two CPU cores, or two GPUs for a run on CUDA).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Literal, Sequence, get_args

from iclkit.errors import IclkitError

SettingName = Literal["no-score-cache", "batch-size", "threads", "processes"]
SETTINGS: tuple[SettingName, ...] = get_args(SettingName)


@dataclass(frozen=True)
class Setting:
    """One way of re-scoring: LM rows per batch (0: the backend's automatic choice, as a run with batch size 0),
    torch threads per process, processes; ``changed``: what differs from the run, in words."""

    name: SettingName
    batch_size: int
    threads: int
    processes: int = 1
    changed: str = ""

    def to_dict(self) -> dict[str, Any]:
        """As verify.json records it (the score cache is off in every setting)."""
        return {**asdict(self), "score_cache": False}


def parse_settings(value: str | Sequence[str]) -> tuple[SettingName, ...]:
    """``"batch-size,threads"`` or a list of names, checked against ``SETTINGS``, in ``SETTINGS``' order."""
    names = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or not names:
        raise IclkitError(f"unknown setting(s) {', '.join(unknown)}" if unknown else "name at least one setting",
                          field="settings", hint=f"comma-separated, from: {', '.join(SETTINGS)}")
    return tuple(s for s in SETTINGS if s in names)


def other_batch_size(rows: int) -> int:
    """The batch size ``batch-size`` re-scores with, given the run's rows per batch."""
    return 1 if rows != 1 else 2


def other_threads(threads: int) -> int:
    """The torch thread count ``threads`` re-scores with, given this process's."""
    return 1 if threads > 1 else 2


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def processes_refused(device: str) -> str | None:
    """Why two processes cannot run here (None: they can): one CPU core, or one GPU for a run on CUDA."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < 2:
            return f"{torch.cuda.device_count()} GPU: two processes would share it"
        return None
    cores = cpu_cores()
    return f"{cores} CPU core: two processes would share it" if cores < 2 else None


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch on ``n`` threads inside the block, its thread count restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
