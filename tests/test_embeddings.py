"""The embedding cache: each distinct text reaches the model once, vectors persist on disk and are reused."""

from __future__ import annotations

import torch

from iclkit.embeddings import EmbeddingCache, Features, LMEncoder, text_of
from iclkit.types import Example


class CountingEncoder:
    """A deterministic encoder that records every text it is asked to embed."""

    key = {"kind": "test", "model": "char-counts"}

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


def test_features_join_input_fields_and_centre(tmp_path):
    enc = CountingEncoder()
    feats = Features(EmbeddingCache(enc, tmp_path, progress=False))
    ex = Example("1", {"premise": "a b", "hypothesis": "c"}, "yes")
    assert text_of(ex) == "a b c"
    centred = feats.with_center([ex, Example("2", {"premise": "aaaa", "hypothesis": "b"}, "no")])
    out = centred([ex])
    assert torch.allclose(out.norm(dim=-1), torch.tensor([3 ** 0.5]))
    assert enc.seen == ["a b c", "aaaa b"]


def test_lm_hidden_states_do_not_depend_on_batch_size(smol):
    texts = ["a short one", "a somewhat longer sentence about films", "ok"]
    one = LMEncoder(smol, layer=6, pooling="mean", batch_size=1)(texts)
    three = LMEncoder(smol, layer=6, pooling="mean", batch_size=3)(texts)
    assert torch.allclose(one, three, atol=1e-4)
    last = LMEncoder(smol, layer=-1, pooling="last", batch_size=3)(texts)
    assert last.shape == (3, smol.model.config.hidden_size)
