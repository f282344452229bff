"""Pooled hidden states of right-padded token rows: the one implementation behind every text embedding."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from iclkit.lm.base import Pooling


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool right-padded hidden states [B, T, D] over the real tokens (``mask`` [B, T] is 1 on them)."""
    if pooling == "last":
        last = mask.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def pooled_batch(model: Any, seqs: Sequence[Sequence[int]], *, pad: int, layer: int,
                 pooling: Pooling) -> torch.Tensor:
    """One forward pass over ``seqs`` right-padded with ``pad``: layer ``layer`` pooled, [len(seqs), D] float32 CPU.

    Right padding keeps each row's real tokens at positions 0..n-1 and the mask hides the pads from them, so a row's
    vector does not depend on the rows batched with it.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, :len(s)] = 1
    device = next(model.parameters()).device
    mask = mask.to(device)
    out = model(input_ids=ids.to(device), attention_mask=mask, output_hidden_states=True)
    return pool(out.hidden_states[layer].float(), mask, pooling).cpu()


def pooled(model: Any, seqs: Sequence[Sequence[int]], *, pad: int, layer: int, pooling: Pooling,
           batch_size: int) -> torch.Tensor:
    """``pooled_batch`` over length-sorted batches of ``batch_size`` rows (little padding), in input order."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        vecs = pooled_batch(model, [seqs[i] for i in idx], pad=pad, layer=layer, pooling=pooling)
        for row, i in enumerate(idx):
            out[i] = vecs[row]
    return torch.stack(out) if out else torch.zeros(0)
