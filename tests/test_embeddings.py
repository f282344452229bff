"""The embedding cache: each distinct text reaches the model once, vectors persist on disk and are reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iclkit.baselines.common import normalized, support_center
from iclkit.embeddings import MINILM_NAME, EmbeddingCache, Features, HFEncoder, LMEncoder, encoder_for, text_of
from iclkit.errors import IclkitError
from iclkit.lm.scorecache import CachedLM
from iclkit.types import Example


class CountingEncoder:
    """A deterministic encoder that records every text it is asked to embed."""

    key = {"kind": "test", "model": "char-counts"}
    description = "character counts"

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, texts):
        self.seen += list(texts)
        return torch.stack([torch.tensor([len(t), t.count("a"), t.count(" ")], dtype=torch.float32) for t in texts])


def test_each_text_is_embedded_once_and_reused_from_disk(tmp_path):
    enc = CountingEncoder()
    cache = EmbeddingCache(enc, tmp_path, progress=False)
    a = cache.embed(["a cat", "a dog", "a cat", "banana"])
    assert enc.seen == ["a cat", "a dog", "banana"]
    b = cache.embed(["banana", "a dog"])
    assert enc.seen == ["a cat", "a dog", "banana"]  # nothing new
    assert torch.equal(b, a[[3, 1]])
    again = CountingEncoder()  # a new process: vectors come back from the safetensors shards
    fresh = EmbeddingCache(again, tmp_path, progress=False)
    assert torch.equal(fresh.embed(["a cat", "banana"]), a[[0, 3]])
    assert again.seen == []
    fresh.embed(["new text"])
    assert again.seen == ["new text"] and fresh.calls == 1
    assert list((tmp_path / cache.key).glob("*.safetensors"))


def test_memory_is_bounded_and_vectors_beyond_it_come_back_from_disk(tmp_path):
    texts = [f"text {i} " + "a" * (i % 7) for i in range(400)]
    unbounded = EmbeddingCache(CountingEncoder(), tmp_path / "free", progress=False, memory_mb=64)
    want = unbounded.embed(texts)
    enc = CountingEncoder()
    vector_bytes = 3 * 4
    cache = EmbeddingCache(enc, tmp_path / "bounded", progress=False, chunk=50, memory_mb=40 * vector_bytes / 2**20)
    got = cache.embed(texts)
    assert torch.equal(got, want) and len(cache._memory) == 40 and cache._held <= cache.memory_bytes
    assert torch.equal(cache.embed(texts[::-1]), want.flip(0)) and len(enc.seen) == 400  # read back, not re-embedded


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts the process's memory mappings (Linux)")
def test_vectors_read_back_from_disk_do_not_keep_the_shards_mapped(tmp_path):
    texts = [f"t{i}" for i in range(600)]
    EmbeddingCache(WideEncoder(), tmp_path, progress=False).embed(texts)
    cache = EmbeddingCache(WideEncoder(), tmp_path, progress=False)
    maps = lambda: len(Path("/proc/self/maps").read_text().splitlines())  # noqa: E731
    before = maps()
    for i in range(0, 600, 6):
        cache.embed(texts[i:i + 6])
    assert cache.calls == 0 and maps() - before < 20  # a tensor viewing a shard would keep one mapping per read


class WideEncoder(CountingEncoder):
    """Character counts padded to 1,000 dimensions (4 kB a vector, so a shard's header is small beside it)."""

    def __call__(self, texts):
        return torch.nn.functional.pad(super().__call__(texts), (0, 997))


def test_many_small_shards_are_merged_within_the_memory_bound(tmp_path):
    writer = EmbeddingCache(WideEncoder(), tmp_path, progress=False, chunk=1)
    want = writer.embed([f"t{i}" for i in range(40)])  # one shard per text
    folder = tmp_path / writer.key
    assert len(list(folder.glob("*.safetensors"))) == 40
    reader = EmbeddingCache(WideEncoder(), tmp_path, progress=False, memory_mb=10 * 4000 / 2**20)
    assert torch.equal(reader.embed([f"t{i}" for i in range(40)]), want) and reader.calls == 0
    shards = list(folder.glob("*.safetensors"))
    assert 4 <= len(shards) <= 5  # merged ~10 vectors (the bound) at a time, never all at once
    assert reader.missing([f"t{i}" for i in range(40)] + ["new"]) == ["new"]


def test_features_join_input_fields_and_centre_on_the_support(tmp_path):
    enc = CountingEncoder()
    feats = Features(EmbeddingCache(enc, tmp_path, progress=False))
    ex = Example("1", {"premise": "a b", "hypothesis": "c"}, "yes")
    other = Example("2", {"premise": "aaaa", "hypothesis": "b"}, "no")
    assert text_of(ex) == "a b c"
    raw = feats([ex, other])
    assert enc.seen == ["a b c", "aaaa b"] and feats.description == "character counts"
    # CL2N with the episode's own support mean: x − mean(support), rescaled to norm sqrt(dim)
    c = support_center(raw, "support")
    out = normalized(raw, c)
    assert torch.allclose(c, raw.mean(0))
    assert torch.allclose(out.norm(dim=-1), torch.full((2,), raw.shape[-1] ** 0.5))
    assert torch.allclose(out[0], -out[1])  # two support items: opposite directions from their mean
    assert support_center(raw, "none") is None and torch.equal(normalized(raw, None), raw)


def test_queries_are_centred_on_their_episodes_support_mean_by_hand(tmp_path):
    """The norm alone holds with or without centring; the vectors do not. Character counts [length, a's, spaces]:
    support "ab", "a b", "cccc" → [2,1,0], [3,1,1], [4,0,0], mean [3, 2/3, 1/3]; the query "aa a" → [4,3,1], minus
    that mean [1, 7/3, 2/3] ∝ [3, 7, 2], rescaled to norm sqrt(3). Centring on no mean, or on a mean that includes
    the query, gives other vectors."""
    from iclkit.baselines.common import episode_arrays
    from iclkit.types import Episode

    feats = Features(EmbeddingCache(CountingEncoder(), tmp_path, progress=False))
    support = tuple(Example(str(i), {"text": t}, lab) for i, (t, lab) in enumerate([("ab", "x"), ("a b", "y"),
                                                                                     ("cccc", "x")]))
    ep = Episode(task="t", index=0, shots=1, seed=0, labels=("x", "y"), support=support,
                 query=(Example("q", {"text": "aa a"}, "y"),))
    (xs, _, xq, _), = episode_arrays(feats, [ep], "support")
    assert torch.allclose(xq[0], torch.tensor([3.0, 7.0, 2.0]) * (3 / 62) ** 0.5)
    assert torch.allclose(xs[2], torch.tensor([1.0, -2 / 3, -1 / 3]) / (14 / 9) ** 0.5 * 3 ** 0.5)
    (_, _, raw_q, _), = episode_arrays(feats, [ep], "none")
    assert torch.equal(raw_q[0], torch.tensor([4.0, 3.0, 1.0]))


TEXTS = ["a short one", "a somewhat longer sentence about films", "ok"]


def _reference(smol, text: str, layer: int) -> torch.Tensor:
    """One text alone through the plain transformer (no padding, no batch): its layer's states [T, D]."""
    ids = torch.tensor([smol.tokenize(text)])
    with torch.inference_mode():
        return smol.model.base_model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0].float()


@pytest.mark.parametrize("layer", [0, 6, -1])
def test_lm_hidden_states_equal_one_text_alone(smol, layer):
    mean = LMEncoder(smol, layer=layer, pooling="mean")(TEXTS)
    last = LMEncoder(smol, layer=layer, pooling="last")(TEXTS)
    for i, text in enumerate(TEXTS):
        ref = _reference(smol, text, layer)
        assert torch.allclose(mean[i], ref.mean(0), atol=1e-4)
        assert torch.allclose(last[i], ref[-1], atol=1e-4)
    assert mean.shape == (3, smol.model.config.hidden_size) and mean.dtype == torch.float32


def test_lm_hidden_states_do_not_depend_on_batch_size(smol):
    old = smol.batch_size
    try:
        smol.batch_size = 1
        one = LMEncoder(smol, layer=6)(TEXTS)
    finally:
        smol.batch_size = old
    assert torch.allclose(one, LMEncoder(smol, layer=6)(TEXTS), atol=1e-4)


def test_lm_encoder_goes_through_the_protocol(smol, tmp_path):
    """A score cache in front of the LM changes nothing: the encoder only calls hidden_states and describe."""
    direct = LMEncoder(smol, layer=6, pooling="last")
    cached = LMEncoder(CachedLM(smol, tmp_path / "scores.sqlite"), layer=6, pooling="last")
    assert torch.equal(direct(TEXTS), cached(TEXTS)) and direct.key == cached.key
    assert cached.description == "smollm2-135m-instruct layer 6 last"
    with pytest.raises(IclkitError) as e:
        LMEncoder(smol, layer=31)(TEXTS)  # SmolLM2-135M has 30 layers: 0..30 and -31..-1
    assert e.value.field == "embed_layer"


def test_minilm_vectors_are_unit_length_batch_independent_and_named(tmp_path):
    enc = encoder_for("minilm")
    assert enc.description == MINILM_NAME
    assert isinstance(enc, HFEncoder) and HFEncoder(enc.folder, name=enc.folder).description == "model"
    vecs = enc(TEXTS)
    assert torch.allclose(vecs.norm(dim=-1), torch.ones(3), atol=1e-5)
    alone = torch.cat([enc([t]) for t in TEXTS])
    assert torch.allclose(vecs, alone, atol=1e-5)
    assert Features(EmbeddingCache(enc, tmp_path, progress=False)).description == "all-MiniLM-L6-v2"
