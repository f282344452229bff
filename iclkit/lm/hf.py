"""The "hf" backend: a transformers causal LM behind the LM interface (prefix-shared, length-bucketed batches)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from typing import Any, Iterator, Mapping, Sequence

import torch

from iclkit.errors import IclkitError
from iclkit.lm.backoff import run_batched
from iclkit.lm.base import GenerationRequest, Loglikelihood, LoglikelihoodRequest, Pooling, lead_for
from iclkit.lm.greedy import Prompt, decode_group, decode_packed, groups as greedy_groups, new_text
from iclkit.lm.hidden import pooled_batch
from iclkit.lm.joined import JoinedTokenization
from iclkit.lm.kvcache import after_prefixes, expanded, gathered, left_pad, shareable
from iclkit.lm.prefix import PrefixGroup, Row, batches, packs, plan
from iclkit.lm.registry import register_backend
from iclkit.lm.spec import ModelSpec
from iclkit.lm.weights import load_tokenizer, resolve, weights_hash

# Rows per batch when batch_size=0 (automatic); on CUDA a call halves it on each out-of-memory error.
AUTO_ROWS = {"cpu": 16, "cuda": 512}
# Rows per decoding step when the batch size is automatic. A step (one new token per row) reads every weight of the
# model whatever its row count, so on a CPU 64 rows cost about twice 16, not four times (SmolLM2-135M, 2 cores: a
# 16-row step runs its matrix products at ~30 GFLOP/s, far below the ~130 of a scoring batch).
AUTO_DECODE_ROWS = {"cpu": 64, "cuda": 512}
# What a forward pass costs on a CPU beyond its tokens, in tokens: it streams every weight once (SmolLM2-135M, 2 cores:
# ~0.1 s a pass, the work of ~60 tokens in a full batch). Batches are cut to run the fewest padded tokens plus this
# per pass (``prefix.batches``); on a GPU, where wide batches cost little more than narrow ones, batches are filled.
CPU_PASS_TOKENS = 64
TOKENS_PER_ROW = 1024  # padded-token budget per row: long prompts get fewer rows per batch


class HFCausalLM(JoinedTokenization):
    """Scores and generates with ``transformers.AutoModelForCausalLM``.

    ``share_prefix=True`` (the default) runs each distinct prefix once and continues every request of that prefix
    from its KV cache, where the model's cache allows it exactly (``scoring_path``, in ``describe()``); ``False``
    runs every request as one full left-padded sequence (the naive path, kept for comparison). Both read logits only
    at the positions that score a continuation.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 0, share_prefix: bool = True,
                 info: Mapping[str, Any] | None = None, context_length: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        JoinedTokenization.__init__(self)
        self.share_prefix = share_prefix
        self.info = dict(info or {})
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
        # Tokens the tokenizer puts in front of every text (e.g. BOS), read from it rather than assumed: none for
        # SmolLM2, one for Llama, and a tokenizer may add more.
        self.lead: list[int] = list(tokenizer("", add_special_tokens=True)["input_ids"])
        cfg = model.config
        own = int(getattr(cfg, "max_position_embeddings", 0) or getattr(tokenizer, "model_max_length", 0))
        # ``context_length``: a smaller window asked for (ModelSpec.context_length); never more than the model's own
        self._context_length = min(own, context_length) if own and context_length > 0 else context_length or own
        params = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        # transformers renames ``past_key_values`` to ``cache`` (deprecated from 5.24, removed in 5.40).
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        kind = "cuda" if model.device.type == "cuda" else "cpu"
        self.batch_size = batch_size if batch_size > 0 else AUTO_ROWS[kind]
        self.decode_rows = batch_size if batch_size > 0 else AUTO_DECODE_ROWS[kind]
        self.pass_tokens = CPU_PASS_TOKENS if kind == "cpu" else None
        self.scoring_path, self._path_reason = self._choose_path()

    @torch.inference_mode()
    def _choose_path(self) -> tuple[str, str]:
        """``"prefix-shared"`` when a prefix's KV cache can be continued exactly by every row (each layer a plain
        full-attention cache, which any position and mask can attend to), else ``"full-sequence"``, and why.

        Sliding-window layers keep only a window of keys and place it by index, which the left-padded rows after a
        cache shift (Mistral, Gemma 2/3); a recurrent state (Mamba) has no per-token keys to broadcast or gather.
        Those models score one full left-padded sequence per request, exact for them; a two-token forward pass at
        load tells which cache the model builds, rather than a list of architectures that would go stale.
        """
        if not self.share_prefix:
            return "full-sequence", "share_prefix=False"
        ids = torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.model.device)
        with self._autocast():
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                             **({"logits_to_keep": 1} if self._keeps_logits else {}))
        cache = getattr(out, self._cache_arg, None)
        if shareable(cache):
            return "prefix-shared", "every layer caches all keys"
        kinds = sorted({type(x).__name__ for x in getattr(cache, "layers", [])}) or [type(cache).__name__]
        return "full-sequence", f"its cache ({', '.join(kinds)}) cannot be continued by rows of other lengths"

    @property
    def context_length(self) -> int:
        """``max_position_embeddings`` of the model's config (else the tokenizer's limit); 0 if neither says."""
        return self._context_length

    @property
    def device(self) -> str:
        """The model's device as a string, e.g. ``"cpu"`` or ``"cuda:0"``."""
        return str(self.model.device)

    def describe(self) -> Mapping[str, Any]:
        """The provenance recorded at load (model, revision, weights hash, dtype, quantization, device, backend) and
        the scoring path this model gets (``scoring_path``, ``scoring_path_reason``)."""
        return {**self.info, "scoring_path": self.scoring_path, "scoring_path_reason": self._path_reason}

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """The tokenizer's chat template applied to ``messages``, ending with the assistant's turn opened."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise IclkitError(f"model {self.info.get('model', '')!r} has no chat template", field="chat",
                              hint="run without --chat, or use an instruction-tuned model that ships a template")
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    @torch.inference_mode()
    def hidden_states(self, texts: Sequence[str], *, layer: int = -1, pooling: Pooling = "mean",
                      max_tokens: int = 256) -> torch.Tensor:
        """Layer ``layer`` of the transformer without its LM head, pooled per text: [len(texts), dim] float32 CPU.

        One forward pass over the texts' tokens in length-bucketed batches of ``batch_size`` rows (the scorer's), and
        no more: ``iclkit.lm.hidden`` keeps only the layer asked for and stops the pass after it. The texts are
        tokenized in one call, outside the prefix memo (each text is embedded once; prefixes repeat).
        """
        n_layers = int(self.model.config.num_hidden_layers)
        if not -n_layers - 1 <= layer <= n_layers:
            raise IclkitError(f"layer {layer} out of range for a {n_layers}-layer model", field="embed_layer")
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        seqs = [(lead_for(self.lead, ids) + list(ids))[:max_tokens] or [self.pad_id] for ids in encoded]
        body = getattr(self.model, "base_model", self.model)  # no LM head: no vocabulary-sized logits
        out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)

        def run(batch: list[int]) -> None:
            vecs = pooled_batch(body, [seqs[i] for i in batch], pad=self.pad_id, layer=layer, pooling=pooling)
            for row, i in enumerate(batch):
                out[i] = vecs[row]

        run_batched(run, range(len(seqs)), [len(s) for s in seqs], self.batch_size, TOKENS_PER_ROW, self.pass_tokens)
        return torch.stack(out) if out else torch.zeros(0, int(self.model.config.hidden_size))

    def _check_length(self, n: int) -> None:
        if self._context_length and n > self._context_length:
            raise IclkitError(
                f"prompt is {n} tokens, longer than the model's context window of {self._context_length} tokens",
                field="shots", hint="use fewer shots, shorter demonstrations, or a model with a longer context")

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Filled length-bucketed batches (for ``generate``, whose batches run one pass per new token)."""
        return batches(lengths, self.batch_size, self.batch_size * TOKENS_PER_ROW)

    def _left_pad(self, seqs: Sequence[Sequence[int]], offset: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``kvcache.left_pad`` with this model's pad id and device."""
        return left_pad(seqs, self.pad_id, self.model.device, offset)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Half-precision autocast on CUDA for half-precision (or quantized) models; a no-op otherwise."""
        dtype = getattr(torch, str(self.info.get("dtype", "")), None)
        if self.model.device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _forward(self, keep: int, **kwargs: Any) -> torch.Tensor:
        """fp32 logits of the last ``keep`` positions (only those go through the LM head when the model allows)."""
        if self._keeps_logits:
            kwargs["logits_to_keep"] = keep
        with self._autocast():
            return self.model(**kwargs).logits[:, -keep:].float()

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Prefix-shared scoring, or one full sequence per request (``scoring_path``); results in request order."""
        items = self.parts(requests)
        for r, (prefix, ctx, cont) in zip(requests, items):
            if not cont:
                raise IclkitError(f"continuation {r.continuation!r} has no tokens", field="verbalizer")
            if not prefix and not ctx:
                self.request_ids(r.prefix, r.context)  # raises the empty-prompt error
            self._check_length(len(prefix) + len(ctx) + len(cont))
        results: list[Loglikelihood | None] = [None] * len(items)
        if self.scoring_path == "prefix-shared":
            for pack in self._packs(plan(items)):
                if not (self._score_group(pack[0], results) if len(pack) == 1 else self._score_pack(pack, results)):
                    self._score_naive([items[t.request] for g in pack for r in g.rows for t in r.targets],
                                      [t.request for g in pack for r in g.rows for t in r.targets], results)
        else:
            self._score_naive(items, range(len(items)), results)
        return results  # type: ignore[return-value]

    def _retrying(self, run: Any, units: Sequence[Any], lengths: Sequence[int]) -> None:
        """``run`` over length-bucketed batches of ``batch_size`` rows, halved within this call on CUDA OOM."""
        run_batched(run, units, lengths, self.batch_size, TOKENS_PER_ROW, self.pass_tokens)

    # -- prefix-shared path ------------------------------------------------------------------------------------------

    def _packs(self, groups: Sequence[PrefixGroup]) -> list[list[PrefixGroup]]:
        """Groups to score together: prefixes with fewer rows than a batch (e.g. the episodes of one runner call on
        a GPU) are packed, similar prefix lengths together, until their rows fill a batch; others go alone."""
        return packs(groups, self.batch_size, lambda g: len(g.shared), lambda g: len(g.rows))

    def _score_pack(self, pack: Sequence[PrefixGroup], results: list[Loglikelihood | None]) -> bool:
        """Several groups at once: their prefixes in one left-padded forward, then every row continues from its
        own prefix's cache row (gathered per row) with its own positions; False if the cache cannot be shared."""
        ids, pmask, ppos = self._left_pad([g.shared for g in pack])
        with self._autocast():
            out = self.model(input_ids=ids, attention_mask=pmask, position_ids=ppos, use_cache=True,
                             **({"logits_to_keep": 1} if self._keeps_logits else {}))
        cache = getattr(out, self._cache_arg, None)
        if not shareable(cache):
            return False
        units = [(gi, row) for gi, g in enumerate(pack) for row in g.rows]
        width = ids.shape[1]

        def run(batch: list[tuple[int, Row]]) -> None:
            rows = [row for _, row in batch]
            index = torch.tensor([gi for gi, _ in batch], device=self.model.device)
            rids, rmask, _ = self._left_pad([r.tokens for r in rows])
            mask, positions = after_prefixes(pmask, index, rmask)
            keep = max(r.keep for r in rows)
            logits = self._forward(keep, input_ids=rids, attention_mask=mask, position_ids=positions, use_cache=True,
                                   **{self._cache_arg: gathered(cache, index)})
            picks = [(b, keep - len(row.tokens) + t.start, t.tokens) for b, row in enumerate(rows) for t in row.targets]
            for t, res in zip([t for row in rows for t in row.targets], _read(logits, picks)):
                results[t.request] = res

        self._retrying(run, units, [width + len(row.tokens) for _, row in units])
        return True

    def _score_group(self, group: PrefixGroup, results: list[Loglikelihood | None]) -> bool:
        """Score a group's rows after its cached prefix; False if this model's cache cannot be shared."""
        cache = None
        if group.shared:
            ids = torch.tensor([group.shared], dtype=torch.long, device=self.model.device)
            with self._autocast():
                out = self.model(input_ids=ids, use_cache=True, **({"logits_to_keep": 1} if self._keeps_logits else {}))
            cache = getattr(out, self._cache_arg, None)
            if not shareable(cache):
                return False
        offset = len(group.shared)
        rows = group.rows

        def run(batch: list[Row]) -> None:
            ids, mask, positions = self._left_pad([r.tokens for r in batch], offset)
            keep = max(r.keep for r in batch)
            kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
            if cache is not None:
                kwargs.update({self._cache_arg: expanded(cache, len(batch)), "use_cache": True})
            else:
                kwargs["use_cache"] = False
            logits = self._forward(keep, **kwargs)
            picks = [(b, keep - len(row.tokens) + t.start, t.tokens) for b, row in enumerate(batch) for t in row.targets]
            for t, res in zip([t for row in batch for t in row.targets], _read(logits, picks)):
                results[t.request] = res

        self._retrying(run, rows, [offset + len(r.tokens) for r in rows])
        return True

    # -- naive path: one full sequence per request -------------------------------------------------------------------

    def _score_naive(self, items: Sequence[tuple[list[int], list[int], list[int]]], where: Sequence[int],
                     results: list[Loglikelihood | None]) -> None:
        units = [(p + c, t, w) for (p, c, t), w in zip(items, where)]

        def run(batch: list[tuple[list[int], list[int], int]]) -> None:
            ids, mask, positions = self._left_pad([c + t for c, t, _ in batch])
            keep = max(len(t) for _, t, _ in batch) + 1
            logits = self._forward(keep, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
            picks = [(b, keep - 1 - len(cont), cont) for b, (_, cont, _) in enumerate(batch)]
            for (_, _, w), res in zip(batch, _read(logits, picks)):
                results[w] = res

        self._retrying(run, units, [len(c) + len(t) for c, t, _ in units])

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy decoding, each text cut at its first stop string: prefix-shared (``iclkit.lm.greedy``: an episode's
        demonstrations run once) where the model's cache allows it, else ``transformers``' ``generate`` on
        length-bucketed, left-padded full prompts."""
        parts = self.splits([(r.prefix, r.context) for r in requests])
        if any(not p and not c for p, c in parts):
            raise IclkitError("empty prompt: the model needs at least one context token (this tokenizer adds no BOS)")
        for r, (p, c) in zip(requests, parts):
            self._check_length(len(p) + len(c) + r.max_new_tokens)
        texts = self._generate_shared(requests, parts) if self.scoring_path == "prefix-shared" else None
        if texts is None:
            texts = self._generate_full(requests, [p + c for p, c in parts])
        out = []
        for r, text in zip(requests, texts):
            for stop in r.stop:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            out.append(text)
        return out

    def _generate_shared(self, requests: Sequence[GenerationRequest],
                         parts: Sequence[tuple[list[int], list[int]]]) -> list[str] | None:
        """Texts from ``greedy.decode_group`` per shared prefix, in batches of up to ``decode_rows`` rows of similar
        length; prefixes with fewer rows than that (the episodes of one call) decode together
        (``greedy.decode_packed``); None if the model's cache cannot be shared after all."""
        prompts = [Prompt(tuple(p), tuple(c), r.max_new_tokens, tuple(r.stop)) for r, (p, c) in zip(requests, parts)]
        eos = self.model.generation_config.eos_token_id
        eos_ids = frozenset([eos] if isinstance(eos, int) else eos or [])
        decode = lambda prompt, new: new_text(self.tokenizer, prompt, new)  # noqa: E731
        texts: list[str] = [""] * len(prompts)
        # Up to decode_rows rows, but no more prompt tokens (prefix included: every row holds its prefix's keys and
        # values once decoding starts) than a scoring batch: long prompts decode in fewer rows.
        rows, budget = self.decode_rows, self.batch_size * TOKENS_PER_ROW
        width = lambda i: len(prompts[i].prefix) + len(prompts[i].context)  # noqa: E731
        units: list[tuple[tuple[int, ...], list[int]]] = []
        for shared, members in greedy_groups(prompts):
            # filled, not cut by pass cost: each decoding batch runs one pass per new token
            units += [(shared, [members[j] for j in b]) for b in batches([width(i) for i in members], rows, budget)]
        tokens = lambda u: len(u[1]) * max(map(width, u[1]))  # noqa: E731
        for pack in packs(units, rows, lambda u: len(u[0]), lambda u: len(u[1]), tokens, budget):
            chunk = [i for _, members in pack for i in members]
            if len(pack) == 1:
                got = decode_group(self._step, self.model.device, self._cache_arg, self.pad_id, eos_ids, pack[0][0],
                                   [prompts[i] for i in chunk], decode)
            else:
                owner = [g for g, (_, members) in enumerate(pack) for _ in members]
                got = decode_packed(self._step, self.model.device, self._cache_arg, self.pad_id, eos_ids,
                                    [shared for shared, _ in pack], owner, [prompts[i] for i in chunk], decode)
            if got is None:
                return None
            for i, text in zip(chunk, got):
                texts[i] = text
        return texts

    def _step(self, **kwargs: Any) -> Any:
        """One forward pass with logits for the last position only (where the model allows it)."""
        if self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        with self._autocast():
            return self.model(**kwargs)

    def _generate_full(self, requests: Sequence[GenerationRequest], prompts: Sequence[list[int]]) -> list[str]:
        """``transformers``' ``generate`` on length-bucketed, left-padded full prompts (texts not yet cut)."""
        results: list[str] = [""] * len(requests)
        for batch in self._batches([len(p) for p in prompts]):
            ids, mask, _ = self._left_pad([prompts[i] for i in batch])
            max_new = max(requests[i].max_new_tokens for i in batch)
            # Stop early once every row has produced a stop string; text after it is cut by the caller anyway.
            stops = sorted({s for i in batch for s in requests[i].stop if s})
            extra = {"stop_strings": stops, "tokenizer": self.tokenizer} if stops else {}
            with self._autocast():
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new,
                                          do_sample=False, pad_token_id=self.pad_id, num_beams=1, **extra)
            for row, i in enumerate(batch):
                new = out[row, ids.shape[1]:ids.shape[1] + requests[i].max_new_tokens].tolist()
                results[i] = new_text(self.tokenizer, prompts[i], new)
        return results


def _read(logits: torch.Tensor, picks: Sequence[tuple[int, int, Sequence[int]]]) -> list[Loglikelihood]:
    """For each ``(row, first position, tokens)``: the tokens' summed log-prob under ``logits`` (batch, pos, vocab)
    from that position on, and whether greedy decoding yields them. One gather and one device sync per batch."""
    rows = [b for b, _, toks in picks for _ in toks]
    positions = [first + i for _, first, toks in picks for i in range(len(toks))]
    tokens = [t for _, _, toks in picks for t in toks]
    index = torch.tensor([rows, positions, tokens], device=logits.device)
    logprobs = torch.log_softmax(logits[index[0], index[1]], dim=-1)
    token_lp = logprobs.gather(-1, index[2][:, None]).squeeze(-1)
    hits = logprobs.argmax(-1) == index[2]
    lp_list, hit_list = token_lp.tolist(), hits.tolist()
    out, at = [], 0
    for _, _, toks in picks:
        n = len(toks)
        out.append(Loglikelihood(float(sum(lp_list[at:at + n])), n, all(hit_list[at:at + n])))
        at += n
    return out


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers at ERROR level and without progress bars inside the block; the caller's settings after it.

    Loading logs warnings a run cannot act on (unused weights, generation defaults) and draws bars over ours; but the
    level and the bars belong to the process that imported iclkit, so they are restored, also when loading fails.
    """
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as tf_logging

    logger = logging.getLogger("transformers")  # the library's root logger, whose level set_verbosity sets
    level = logger.level  # its own level, not the effective one: restoring NOTSET must give NOTSET
    bars = tf_logging.is_progress_bar_enabled()
    hub_bars_off = hub_utils.are_progress_bars_disabled()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()  # also turns off huggingface_hub's download bars
    try:
        yield
    finally:
        logger.setLevel(level)
        with warnings.catch_warnings():
            # huggingface_hub warns on each toggle that HF_HUB_DISABLE_PROGRESS_BARS overrides; it keeps the env's state
            warnings.simplefilter("ignore")
            if bars:
                tf_logging.enable_progress_bar()  # turns huggingface_hub's bars back on as well
            if hub_bars_off:
                hub_utils.disable_progress_bars()
            elif not bars:
                hub_utils.enable_progress_bars()


def _torch_dtype(spec: ModelSpec, device: str) -> Any:
    if spec.dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, spec.dtype)


@register_backend("hf")
def load(spec: ModelSpec) -> HFCausalLM:
    """Load ``spec`` with ``transformers.AutoModelForCausalLM`` (bitsandbytes for 8bit/4bit) as an HFCausalLM."""
    import transformers
    from transformers import AutoModelForCausalLM

    device = spec.device if spec.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _torch_dtype(spec, device)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": spec.trust_remote_code,
                              "attn_implementation": "sdpa"}
    with quiet_transformers():
        folder, provenance = resolve(spec)
        if spec.quantization != "none":
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_8bit=spec.quantization == "8bit", load_in_4bit=spec.quantization == "4bit",
                bnb_4bit_compute_dtype=dtype)
            kwargs["device_map"] = {"": device}
        try:
            tokenizer = load_tokenizer(folder, trust_remote_code=spec.trust_remote_code)
            try:
                model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
            except ValueError:  # an architecture without SDPA support: its default attention
                del kwargs["attn_implementation"]
                model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        except (OSError, ValueError) as e:
            raise IclkitError(f"cannot load model: {e}".splitlines()[0], file=str(folder), field="model") from None
        if spec.quantization == "none":
            model = model.to(device)
    info = {
        "model": spec.name, "revision": spec.revision or getattr(model.config, "_commit_hash", None),
        "weights_sha256": weights_hash(folder), "dtype": str(dtype).replace("torch.", ""),
        "quantization": spec.quantization, "device": device, "folder": str(folder), **provenance,
        "class": type(model).__name__, "backend": spec.backend,
    }
    if spec.context_length:
        info["context_length"] = spec.context_length
    return HFCausalLM(model, tokenizer, batch_size=spec.batch_size, share_prefix=spec.share_prefix, info=info,
                      context_length=spec.context_length)
