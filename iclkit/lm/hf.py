"""A transformers causal LM behind the LM interface: batched, length-sorted, left-padded, results in input order."""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import torch

from ..errors import IclkitError
from .base import GenerationRequest, Loglikelihood, LoglikelihoodRequest


class HFCausalLM:
    """Scores and generates with ``transformers.AutoModelForCausalLM``.

    Sequences are left-padded with explicit position ids, so every sequence ends at the last position and only the
    last ``max(continuation length) + 1`` positions go through the LM head.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, info: Mapping[str, Any] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.info = dict(info or {})
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
        # Tokens the tokenizer puts in front of every text (e.g. BOS); empty for SmolLM2.
        self.lead: list[int] = list(tokenizer("", add_special_tokens=True)["input_ids"])
        cfg = model.config
        self.max_length = int(getattr(cfg, "max_position_embeddings", 0) or getattr(tokenizer, "model_max_length", 0))
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._encoded: dict[str, list[int]] = {}

    @property
    def device(self) -> torch.device:
        return self.model.device

    def describe(self) -> Mapping[str, Any]:
        return dict(self.info)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (memoized: prefixes repeat across requests)."""
        ids = self._encoded.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
            if len(self._encoded) < 100_000:
                self._encoded[text] = ids
        return ids

    def request_ids(self, prefix: str, context: str) -> list[int]:
        ids = self.lead + self.encode(prefix) + self.encode(context)
        if not ids:
            raise IclkitError("empty prompt: the model needs at least one context token (this tokenizer adds no BOS)")
        return ids

    def _check_length(self, n: int) -> None:
        if self.max_length and n > self.max_length:
            raise IclkitError(
                f"prompt is {n} tokens, longer than the model's context window of {self.max_length} tokens",
                field="shots", hint="use fewer shots, shorter demonstrations, or a model with a longer context")

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        items = []
        for r in requests:
            cont = self.encode(r.continuation)
            if not cont:
                raise IclkitError(f"continuation {r.continuation!r} has no tokens", field="verbalizer")
            ctx = self.request_ids(r.prefix, r.context)
            self._check_length(len(ctx) + len(cont))
            items.append((ctx, cont))
        results: list[Loglikelihood | None] = [None] * len(items)
        for batch in self._batches([len(c) + len(t) for c, t in items]):
            for i, res in zip(batch, self._score([items[i] for i in batch])):
                results[i] = res
        return results  # type: ignore[return-value]

    def _score(self, items: Sequence[tuple[list[int], list[int]]]) -> list[Loglikelihood]:
        seqs = [c + t for c, t in items]
        ids, mask, positions = self._left_pad(seqs)
        keep = max(len(t) for _, t in items) + 1
        kwargs = {"logits_to_keep": keep} if self._keeps_logits else {}
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                            **kwargs).logits[:, -keep:-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        out = []
        for row, (_, cont) in enumerate(items):
            n = len(cont)
            lp = logprobs[row, keep - 1 - n:]
            target = torch.tensor(cont, device=lp.device)
            token_lp = lp.gather(-1, target[:, None]).squeeze(-1)
            greedy = bool((lp.argmax(-1) == target).all())
            out.append(Loglikelihood(float(token_lp.sum()), n, greedy))
        return out

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        prompts = [self.request_ids(r.prefix, r.context) for r in requests]
        for r, p in zip(requests, prompts):
            self._check_length(len(p) + r.max_new_tokens)
        results: list[str | None] = [None] * len(requests)
        for batch in self._batches([len(p) for p in prompts]):
            ids, mask, _ = self._left_pad([prompts[i] for i in batch])
            max_new = max(requests[i].max_new_tokens for i in batch)
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                      pad_token_id=self.pad_id, num_beams=1)
            for row, i in enumerate(batch):
                new = out[row, ids.shape[1]:ids.shape[1] + requests[i].max_new_tokens]
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                for stop in requests[i].stop:
                    if stop and stop in text:
                        text = text[: text.index(stop)]
                results[i] = text
        return results  # type: ignore[return-value]
