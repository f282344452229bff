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

from iclkit.lm.kvcache import after_prefixes, expanded, gathered, left_pad, shareable


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


def new_text(tokenizer: Any, prompt: list[int], new: list[int]) -> str:
    """The text ``new`` adds after ``prompt``: decoded together, less the prompt's text. Decoding the new ids alone
    would read them as a text's start, where a SentencePiece decoder drops the leading space."""
    head = tokenizer.decode(prompt, skip_special_tokens=True)
    text = tokenizer.decode(prompt + new, skip_special_tokens=True)
    return text[len(head):] if text.startswith(head) else tokenizer.decode(new, skip_special_tokens=True)


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
    return _steps(step, cache_arg, eos, prompts, rows, ids, mask, positions, cache, decode)


@torch.inference_mode()
def decode_packed(step: Step, device: Any, cache_arg: str, pad_id: int, eos: frozenset[int],
                  shared: Sequence[tuple[int, ...]], owner: Sequence[int], prompts: Sequence[Prompt],
                  decode: Decode) -> list[str] | None:
    """``decode_group`` for the prompts of several prefixes at once (prompt ``b`` starts with ``shared[owner[b]]``,
    each prefix non-empty): the prefixes run in one left-padded forward pass and every row continues from its own
    prefix's cache row, with its own positions and mask. A decoding step reads every weight of the model whatever
    its row count, so on a CPU a step of 64 rows costs about twice one of 16, not four times (SmolLM2, 2 cores); this
    is why the episodes of one call decode together. Texts are those of ``decode_group`` per prefix up to float rounding (tests compare
    them); None if the model's cache cannot be shared."""
    pids, pmask, ppos = left_pad([list(s) for s in shared], pad_id, device)
    out = step(input_ids=pids, attention_mask=pmask, position_ids=ppos, use_cache=True)
    cache = getattr(out, cache_arg, None)
    if not shareable(cache):
        return None
    index = torch.tensor(list(owner), device=device)
    rows = [list(p.prefix[len(shared[g]):]) + list(p.context) for p, g in zip(prompts, owner)]
    ids, rmask, _ = left_pad(rows, pad_id, device)
    mask, positions = after_prefixes(pmask, index, rmask)
    return _steps(step, cache_arg, eos, prompts, rows, ids, mask, positions, gathered(cache, index), decode)


def _steps(step: Step, cache_arg: str, eos: frozenset[int], prompts: Sequence[Prompt], rows: list[list[int]],
           ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, decode: Decode) -> list[str]:
    """The decoding loop: the rows' own tokens, then one new token per row per step until every row is done. Once
    half the rows in the batch are done they leave it (their cache rows dropped), so a few long answers do not keep
    every finished row stepping."""
    limit = max(p.max_new_tokens for p in prompts)
    new: list[list[int]] = [[] for _ in prompts]
    done = [p.max_new_tokens <= 0 for p in prompts]
    live = list(range(len(prompts)))  # the prompt each batch row belongs to
    kwargs: dict[str, Any] = {cache_arg: cache} if cache is not None else {}
    for _ in range(limit):
        keep = [r for r, b in enumerate(live) if not done[b]]
        if not keep:
            break
        if 2 * len(keep) <= len(live) and cache_arg in kwargs:
            index = torch.tensor(keep, device=ids.device)
            ids, mask, positions = ids[index], mask[index], positions[index]
            kwargs = {cache_arg: gathered(kwargs[cache_arg], index)}
            live = [live[r] for r in keep]
        out = step(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        kwargs = {cache_arg: getattr(out, cache_arg)}
        chosen = out.logits[:, -1].float().argmax(-1)
        for b, token in zip(live, chosen.tolist()):
            if done[b]:
                continue
            new[b].append(token)
            p = prompts[b]
            if token in eos or len(new[b]) >= p.max_new_tokens or \
                    (p.stop and any(s and s in decode(rows[b], new[b]) for s in p.stop)):
                done[b] = True
        ids = chosen[:, None]
        mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=mask.device)], 1)
        positions = positions[:, -1:] + 1
    return [decode(rows[b], new[b]) for b in range(len(prompts))]
