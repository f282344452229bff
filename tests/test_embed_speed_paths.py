"""The fast embedding path (only the asked-for layer, the pass stopped after it, no KV cache) against today's
definition: ``output_hidden_states=True`` over the same right-padded rows, pooled by a loop written here."""

from __future__ import annotations

import json
import random
import threading
from contextlib import contextmanager
from typing import Iterator

import pytest
import torch

from iclkit.embeddings import EmbeddingCache, HFEncoder, encoder_for
from iclkit.lm.hidden import layer_states

N_LAYERS = 30  # SmolLM2-135M: hidden_states has 31 entries, 0..30 (or -31..-1)


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    """Twelve SST-2 train sentences of mixed lengths, plus a one-word and an empty text (padded to one token)."""
    rows = [json.loads(line)["text"] for line in (data_dir / "sst2" / "train.jsonl").read_text().splitlines()[:400]]
    return random.Random(18).sample(rows, 12) + ["ok", ""]


@contextmanager
def rows_per_batch(lm, rows: int) -> Iterator[None]:
    """Batches filled up to ``rows`` rows (not cut by a CPU pass's cost), so ``rows`` = all texts is one batch."""
    old = lm.batch_size, lm.pass_tokens
    lm.batch_size, lm.pass_tokens = rows, None
    try:
        yield
    finally:
        lm.batch_size, lm.pass_tokens = old


def reference(lm, texts: list[str], layer: int, pooling: str) -> torch.Tensor:
    """Today's vectors: every text in one right-padded batch through the base model with every layer's states."""
    seqs = [(lm.lead + lm.tokenize(t))[:256] or [lm.pad_id] for t in texts]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [lm.pad_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.inference_mode():
        states = lm.model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    hidden = states[layer].float()
    out = []
    for row, s in enumerate(seqs):
        real = hidden[row, :len(s)]
        out.append(real[-1] if pooling == "last" else real.sum(0) / len(s))
    return torch.stack(out)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal within 1e-5 of the largest entry: fp32 matrix products round differently with the number of rows
    (intermediate layers reach |x| ~ 1e4, whose float32 spacing is ~1e-3), so that is as equal as two batchings get."""
    return bool(((a - b).abs().max() <= 1e-5 * max(1.0, float(b.abs().max()))).item())


@pytest.mark.parametrize("layer", [0, 1, 15, N_LAYERS - 1, N_LAYERS, -1, -2, -N_LAYERS - 1])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_vectors_equal_todays_definition(smol, texts, layer, pooling):
    with rows_per_batch(smol, len(texts)):  # one batch, as the reference: the same rows go through the same GEMMs
        fast = smol.hidden_states(texts, layer=layer, pooling=pooling)
    ref = reference(smol, texts, layer, pooling)
    assert fast.shape == ref.shape and fast.dtype == torch.float32
    assert torch.allclose(fast, ref, rtol=0, atol=1e-5), (fast - ref).abs().max()


def test_last_layer_is_last_hidden_state(smol, texts):
    """transformers returns last_hidden_state (after the final norm) as hidden_states[-1] for this model, so the
    fast path's last_hidden_state is today's last layer, bit for bit."""
    ids = torch.tensor([smol.tokenize(texts[0])])
    with torch.inference_mode():
        out = smol.model.base_model(input_ids=ids, output_hidden_states=True)
    assert len(out.hidden_states) == N_LAYERS + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert not torch.equal(out.hidden_states[-2], out.last_hidden_state)


@pytest.mark.parametrize("layer", [0, 6, -1])
def test_vectors_do_not_depend_on_batch_size_or_neighbours(smol, texts, layer):
    with rows_per_batch(smol, 16):
        batched = smol.hidden_states(texts, layer=layer)
    with rows_per_batch(smol, 1):
        alone = smol.hidden_states(texts, layer=layer)
    with rows_per_batch(smol, 3):
        mixed = smol.hidden_states(texts[::-1] + ["another text batched with them"], layer=layer)[:-1].flip(0)
    assert close(alone, batched) and close(mixed, batched)


@contextmanager
def counted_blocks(body) -> Iterator[list[int]]:
    """How many decoder blocks each forward pass through ``body`` ran."""
    runs: list[int] = []
    handles = [body.register_forward_pre_hook(lambda *_: runs.append(0))]
    handles += [b.register_forward_hook(lambda *_: runs.__setitem__(-1, runs[-1] + 1)) for b in body.layers]
    try:
        yield runs
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize(("layer", "blocks"), [(0, 0), (1, 1), (15, 15), (-2, N_LAYERS - 1), (-1, N_LAYERS)])
def test_the_pass_stops_after_the_layer_it_needs(smol, layer, blocks):
    body = smol.model.base_model
    hooks = lambda: [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in body.layers]  # noqa: E731
    before = hooks()  # transformers' own output-capturing hooks, once anything asked for hidden states
    with counted_blocks(body) as runs:
        smol.hidden_states(["a film about nothing", "fine"], layer=layer)
    assert runs == [blocks]
    assert hooks() == before  # the stop hook is gone
    with counted_blocks(body) as runs, torch.inference_mode():
        out = body(input_ids=torch.tensor([[1, 2, 3]]))
    assert runs == [N_LAYERS] and out.last_hidden_state.shape == (1, 3, smol.model.config.hidden_size)


def test_no_kv_cache_is_built(smol):
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    body = smol.model.base_model
    seen: list[object] = []
    fields = ("cache", "past_key_values")  # the output's name for it from transformers 5.24, and before
    handle = body.register_forward_hook(lambda m, a, out: seen.extend(getattr(out, k, None) for k in fields))
    try:
        with torch.inference_mode():
            layer_states(body, ids, mask, -1)
    finally:
        handle.remove()
    assert seen == [None, None]


def test_another_threads_forward_is_not_stopped(smol):
    """The stop hook acts only in the thread that set it: a forward through the same model elsewhere runs on."""
    body = smol.model.base_model
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        full = body(input_ids=ids, use_cache=False).last_hidden_state
    results: list[torch.Tensor] = []
    started, release = threading.Event(), threading.Event()

    def hold(*_):  # keeps the main thread's stop hook installed while the other thread runs its forward
        started.set()
        release.wait(60)

    handle = body.layers[3].register_forward_pre_hook(hold)
    try:
        def other() -> None:
            started.wait(60)
            handle.remove()  # the other thread must not wait on itself
            with torch.inference_mode():
                results.append(body(input_ids=ids, use_cache=False).last_hidden_state)
            release.set()

        t = threading.Thread(target=other)
        t.start()
        with torch.inference_mode():
            mid = layer_states(body, ids, torch.ones_like(ids), 5)
        t.join(60)
    finally:
        handle.remove()
    assert len(results) == 1 and torch.equal(results[0], full)
    assert mid.shape == full.shape and not torch.equal(mid, full)


def test_minilm_is_todays_last_layer(tmp_path):
    enc = encoder_for("minilm")
    assert isinstance(enc, HFEncoder)
    sample = ["a short one", "a somewhat longer sentence about films", "ok"]
    vecs = enc(sample)
    refs = []
    for text in sample:  # one text alone, every layer kept: the last one, mean-pooled and normalised
        ids = enc._tok(text, truncation=True, max_length=enc.max_tokens, return_tensors="pt")
        with torch.inference_mode():
            states = enc._model(**ids, output_hidden_states=True).hidden_states[-1][0]
        refs.append(torch.nn.functional.normalize(states.mean(0), dim=-1))
    assert torch.allclose(vecs, torch.stack(refs), rtol=0, atol=1e-5)


class LengthEncoder:
    key = {"kind": "test", "model": "lengths"}
    description = "lengths"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return torch.tensor([[float(len(t)), float(t.count("a"))] for t in texts])


def test_cache_sends_chunks_of_similar_length_and_returns_input_order(tmp_path):
    enc = LengthEncoder()
    cache = EmbeddingCache(enc, tmp_path, progress=False, chunk=2)
    sample = ["aaaaaa", "b", "aaaa", "cc", "b", "dddddd"]
    out = cache.embed(sample)
    assert enc.calls == [["b", "cc"], ["aaaa", "aaaaaa"], ["dddddd"]]  # each text once, shortest first, stable
    assert torch.equal(out, torch.tensor([[float(len(t)), float(t.count("a"))] for t in sample]))
