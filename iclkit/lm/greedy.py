"""Greedy decoding that runs each shared prefix once: an episode's demonstrations are computed a single time and every
query of the episode continues from their KV cache, as prefix-shared scoring does (``iclkit.lm.prefix``).

``transformers``' ``generate`` recomputes the whole prompt of every row, so at k shots each query pays for the k
demonstrations again, and on a CPU its per-step bookkeeping (logits processors, stopping criteria built from the
vocabulary) costs as much as a small model's forward. Here a step is one forward of one new token per row and an
argmax; a row stops at ``max_new_tokens`` or once its text holds a stop string, the batch once every row has.
Greedy choices are those of the full-sequence computation up to float rounding in the logits (the prefix cache is
exact for the plain full-attention caches it is used with, ``kvcache.shareable``); tests compare the texts with
``generate``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from iclkit.lm.kvcache import expanded, left_pad, shareable


@dataclass(frozen=True)
class Prompt:
    """One request's ids: the shared part (``prefix``: lead and demonstrations) and its own (``context``)."""

    prefix: tuple[int, ...]
    context: tuple[int, ...]
    max_new_tokens: int
    stop: tuple[str, ...]


Step = Callable[..., Any]  # the model's forward (last position's logits only), kwargs in, output with .logits out
Decode = Callable[[list[int], list[int]], str]  # (prompt ids, new ids) -> the text the new ids add


def groups(prompts: Sequence[Prompt]) -> list[tuple[tuple[int, ...], list[int]]]:
    """(shared prefix less its last token, indices of the prompts that share it), in first-seen order. The prefix's
    last token goes with each row (as in ``prefix.plan``), so an empty context needs no special case."""
    out: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        out.setdefault(p.prefix[:-1], []).append(i)
    return list(out.items())


@torch.inference_mode()
def decode_group(step: Step, device: Any, cache_arg: str, pad_id: int, eos: frozenset[int],
                 shared: tuple[int, ...], prompts: Sequence[Prompt], decode: Decode) -> list[str] | None:
    """Greedy texts of ``prompts``, which all start with ``shared``, each up to its first stop string or an end of
    sequence token (``eos``, kept in the ids as ``generate`` keeps it; ``decode`` drops special tokens); None if the
    model's cache cannot be shared."""
    cache = None
    if shared:
        out = step(input_ids=torch.tensor([shared], device=device), use_cache=True)
        cache = getattr(out, cache_arg, None)
        if not shareable(cache):
            return None
        cache = expanded(cache, len(prompts))
    rows = [list(p.prefix[len(shared):]) + list(p.context) for p in prompts]
    ids, mask, positions = left_pad(rows, pad_id, device, len(shared))
    limit = max(p.max_new_tokens for p in prompts)
    new: list[list[int]] = [[] for _ in prompts]
    done = [p.max_new_tokens <= 0 for p in prompts]
    kwargs: dict[str, Any] = {cache_arg: cache} if cache is not None else {}
    for _ in range(limit):
        if all(done):
            break
        out = step(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        kwargs = {cache_arg: getattr(out, cache_arg)}
        chosen = out.logits[:, -1].float().argmax(-1)
        for b, token in enumerate(chosen.tolist()):
            if done[b]:
                continue
            new[b].append(token)
            p = prompts[b]
            if token in eos or len(new[b]) >= p.max_new_tokens or \
                    (p.stop and any(s and s in decode(rows[b], new[b]) for s in p.stop)):
                done[b] = True
        ids = chosen[:, None]
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], 1)
        positions = positions[:, -1:] + 1
    return [decode(rows[b], new[b]) for b in range(len(prompts))]
