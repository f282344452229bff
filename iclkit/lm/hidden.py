"""Pooled hidden states of right-padded token rows: the one implementation behind every text embedding.

A text's vector should cost one forward pass over its tokens and no more: the LM head never runs (callers pass the
base model), no KV cache is built, only the asked-for layer's states are kept, and the pass stops after the layer
that produces them. Layers are numbered as transformers' ``hidden_states`` numbers them (0 = the input to the first
block, i = the output of block i, the last = ``last_hidden_state``, after the final norm), so vectors are the ones
``output_hidden_states=True`` gives.
"""

from __future__ import annotations

import inspect
import threading
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


class _Reached(Exception):
    """Raised by a hook once the wanted layer's states exist: the rest of the forward pass is not needed."""

    def __init__(self, states: torch.Tensor):
        super().__init__()
        self.states = states


def _blocks(model: Any, n_layers: int) -> torch.nn.ModuleList | None:
    """The model's ``n_layers`` transformer blocks in order (``layers`` of Llama-family models, ``h`` of GPT-2's),
    or None when it keeps them elsewhere."""
    for name in ("layers", "h"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks) == n_layers:
            return blocks
    return None


def _stopped_at(model: Any, blocks: torch.nn.ModuleList, index: int, kwargs: dict[str, Any]) -> torch.Tensor:
    """``hidden_states[index]`` (0 ≤ index < number of blocks) from a forward pass that stops once it exists:
    the input of block 0 for index 0, else the output of block ``index - 1`` (as transformers records them)."""
    owner = threading.get_ident()  # another thread's forward through the same model must run to its end

    def before(module: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        if threading.get_ident() == owner:
            raise _Reached(args[0] if args else kw["hidden_states"])

    def after(module: Any, args: Any, output: Any) -> None:
        if threading.get_ident() == owner:
            raise _Reached(output[0] if isinstance(output, tuple) else output)

    handle = (blocks[0].register_forward_pre_hook(before, with_kwargs=True) if index == 0
              else blocks[index - 1].register_forward_hook(after))
    try:
        model(**kwargs)
    except _Reached as reached:
        return reached.states
    finally:
        handle.remove()
    raise RuntimeError(f"the forward pass never reached hidden state {index}")  # a model that skips its blocks


def layer_states(model: Any, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """``model(...).hidden_states[layer]`` [B, T, D] for right-padded ``ids``, computing and keeping only that."""
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False  # a KV cache copies every layer's keys and values, and nobody reads them
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if n_layers is None:  # cannot tell which index is the last: the general path
        return model(**kwargs, output_hidden_states=True).hidden_states[layer]
    index = layer % (n_layers + 1)
    if index == n_layers:
        # transformers returns last_hidden_state (after the final norm) as hidden_states[-1]
        return model(**kwargs).last_hidden_state
    blocks = _blocks(model, n_layers)
    if blocks is None:
        return model(**kwargs, output_hidden_states=True).hidden_states[index]
    return _stopped_at(model, blocks, index, kwargs)


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
    return pool(layer_states(model, ids.to(device), mask, layer).float(), mask, pooling).cpu()


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
