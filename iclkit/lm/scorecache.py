"""An on-disk cache of LM scores, so a rerun or another analysis of the same prompts does not recompute them.

Keys are sha256 over (model weights hash, dtype, quantization, request text): a different checkpoint or precision
never reads another's scores. Values are stored as IEEE doubles, so a hit returns exactly what was computed.
``CachedLM`` wraps any LM with the same interface and forwards only the misses, in their original order; the rest of
the protocol (tokenizer, chat template, hidden states, ...) goes straight to the wrapped LM, uncached.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.lm.base import LM, GenerationRequest, Loglikelihood, LoglikelihoodRequest, Pooling

if TYPE_CHECKING:
    import torch

CACHE_VERSION = 1
_CHUNK = 500  # keys per SELECT, below sqlite's bound-parameter limit


def default_path() -> Path:
    """``$ICLKIT_CACHE/scores.sqlite`` (``~/.cache/iclkit`` by default)."""
    from iclkit.paths import cache_dir

    return cache_dir() / "scores.sqlite"


class ScoreCache:
    """A sqlite3 table of log-likelihoods and generations by key; safe to share between processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS loglikelihood "
                             "(key TEXT PRIMARY KEY, logprob REAL NOT NULL, n_tokens INTEGER NOT NULL, "
                             "greedy INTEGER NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS generation (key TEXT PRIMARY KEY, text TEXT NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.DatabaseError) as e:
            raise IclkitError(f"cannot open score cache: {e}", file=str(self.path), field="score_cache") from None
        self._lock = threading.Lock()

    def get(self, table: str, keys: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        with self._lock:
            for i in range(0, len(keys), _CHUNK):
                chunk = list(keys[i:i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(f"SELECT * FROM {table} WHERE key IN ({marks})", chunk):
                    found[row[0]] = tuple(row[1:])
        return found

    def put(self, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
        rows = list(rows)
        if not rows:
            return
        marks = ",".join("?" * len(rows[0]))
        with self._lock, self._db:
            self._db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)

    def __len__(self) -> int:
        with self._lock:
            return sum(self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                       for t in ("loglikelihood", "generation"))

    def close(self) -> None:
        self._db.close()


def model_key(info: Mapping[str, Any]) -> str:
    """What identifies a model's scores: weights hash, dtype and quantization."""
    weights = info.get("weights_sha256")
    if not weights:
        raise IclkitError("cannot cache scores of a model without a weights hash (describe()['weights_sha256'])",
                          field="score_cache")
    return json.dumps([CACHE_VERSION, weights, str(info.get("dtype")), str(info.get("quantization", "none"))])


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


class CachedLM:
    """An LM that answers from the cache and forwards only misses to ``lm`` (same results, same order)."""

    def __init__(self, lm: LM, cache: ScoreCache | str | Path):
        self.lm = lm
        self.cache = cache if isinstance(cache, ScoreCache) else ScoreCache(cache)
        # what every stored score is filed under; a model with a lead (BOS) is filed apart from the scores stored
        # before a chat prompt that writes BOS itself stopped getting a second one (SmolLM2's, with none, are kept)
        self.key = model_key(lm.describe()) + ("/lead once" if lm.lead else "")
        self.hits = 0
        self.misses = 0

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Stored results for known requests; the others are scored by ``lm`` in one call, stored and returned."""
        keys = [_key(self.key, "ll", r.prefix, r.context, r.continuation) for r in requests]
        found = self.cache.get("loglikelihood", list(dict.fromkeys(keys)))
        todo = {k: r for k, r in zip(keys, requests) if k not in found}  # first occurrence of each missing key
        if todo:
            results = self.lm.loglikelihood(list(todo.values()))
            rows = [(k, res.logprob, res.n_tokens, int(res.greedy)) for k, res in zip(todo, results)]
            self.cache.put("loglikelihood", rows)
            found.update({row[0]: row[1:] for row in rows})
        self.misses += len(todo)
        self.hits += len(requests) - len(todo)
        return [Loglikelihood(float(found[k][0]), int(found[k][1]), bool(found[k][2])) for k in keys]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Stored generations for known requests; the others are generated by ``lm`` in one call and stored."""
        keys = [_key(self.key, "gen", r.prefix, r.context, r.max_new_tokens, list(r.stop)) for r in requests]
        found = self.cache.get("generation", list(dict.fromkeys(keys)))
        todo = {k: r for k, r in zip(keys, requests) if k not in found}
        if todo:
            texts = self.lm.generate(list(todo.values()))
            rows = [(k, text) for k, text in zip(todo, texts)]
            self.cache.put("generation", rows)
            found.update({k: (text,) for k, text in rows})
        self.misses += len(todo)
        self.hits += len(requests) - len(todo)
        return [str(found[k][0]) for k in keys]

    # The rest of the protocol is cheap or cached elsewhere (embeddings): forwarded as is.

    def tokenize(self, text: str) -> list[int]:
        """The wrapped LM's tokenization."""
        return self.lm.tokenize(text)

    def token_counts(self, requests: Sequence[LoglikelihoodRequest]) -> list[int]:
        """The wrapped LM's token counts."""
        return self.lm.token_counts(requests)

    @property
    def lead(self) -> Sequence[int]:
        """The wrapped LM's lead (BOS) tokens."""
        return self.lm.lead

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """The wrapped LM's chat format."""
        return self.lm.apply_chat_template(messages)

    def hidden_states(self, texts: Sequence[str], *, layer: int = -1, pooling: Pooling = "mean",
                      max_tokens: int = 256) -> "torch.Tensor":
        """The wrapped LM's hidden states (``iclkit.embeddings`` caches vectors on disk)."""
        return self.lm.hidden_states(texts, layer=layer, pooling=pooling, max_tokens=max_tokens)

    @property
    def context_length(self) -> int:
        """The wrapped LM's context length."""
        return self.lm.context_length

    @property
    def device(self) -> str:
        """The wrapped LM's device."""
        return self.lm.device

    def describe(self) -> Mapping[str, Any]:
        """The wrapped LM's description: the cache changes no score."""
        return self.lm.describe()
