"""A prefix's KV cache shared by the rows that continue it: which caches allow it, and the per-row views of one.

Only a transformers ``DynamicCache`` of plain full-attention layers is shared: any position and mask can attend to
all of its keys. The copies below are shallow (the cache object and its layer list), so appending a row's keys
allocates new tensors and the prefix's own cache is never written to.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch


def shareable(cache: Any) -> bool:
    """Whether ``cache`` is a transformers DynamicCache of plain (full-attention) layers, which we can broadcast."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:
        return False
    layers = getattr(cache, "layers", None)
    return isinstance(cache, DynamicCache) and bool(layers) and all(type(x) is DynamicLayer for x in layers)


def gathered(cache: Any, index: torch.Tensor) -> Any:
    """A copy of a cache whose row b is row ``index[b]`` of ``cache`` (copied: rows come from different prefixes)."""
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        new = copy.copy(layer)
        new.keys = layer.keys.index_select(0, index)
        new.values = layer.values.index_select(0, index)
        out.layers.append(new)
    return out


def expanded(cache: Any, batch: int) -> Any:
    """A copy of a batch-1 cache broadcast to ``batch`` rows without copying its tensors (appends allocate anew)."""
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        new = copy.copy(layer)
        new.keys = layer.keys.expand(batch, *layer.keys.shape[1:])
        new.values = layer.values.expand(batch, *layer.values.shape[1:])
        out.layers.append(new)
    return out


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: Any, offset: int = 0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids, attention mask and position ids of left-padded rows that continue ``offset`` cached tokens."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width + offset), dtype=torch.long)
    mask[:, :offset] = 1
    for row, s in enumerate(seqs):
        ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[row, offset + width - len(s):] = 1
    positions = (mask[:, offset:].cumsum(-1) - 1).clamp(min=0) + offset
    return ids.to(device), mask.to(device), positions.to(device)


def after_prefixes(pmask: torch.Tensor, index: torch.Tensor, rmask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mask and position ids of left-padded rows (mask ``rmask``), row b continuing row ``index[b]`` of a
    left-padded batch of prefixes (mask ``pmask``): its prefix's mask then its own, positions after its prefix."""
    positions = pmask.sum(-1)[index][:, None] + (rmask.cumsum(-1) - 1).clamp(min=0)
    return torch.cat([pmask[index], rmask], 1), positions
