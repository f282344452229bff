"""Score cache: a wrapped real LM returns exactly the uncached scores and forwards only misses."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Sequence

import pytest

from iclkit import evaluate
from iclkit.errors import IclkitError
from iclkit.lm.base import GenerationRequest, LoglikelihoodRequest
from iclkit.lm.scorecache import CachedLM, ScoreCache, model_key

PREFIX = "Review: a warm, funny film.\nSentiment: positive\n\nReview: dull and far too long.\nSentiment: negative\n\n"


def _requests(texts: Sequence[str]) -> list[LoglikelihoodRequest]:
    return [LoglikelihoodRequest(PREFIX, f"Review: {t}\nSentiment:", f" {lab}")
            for t in texts for lab in ("negative", "positive")]


class Counting:
    """Passes every call to the real LM and records which requests reached it."""

    def __init__(self, lm: Any):
        self.lm = lm
        self.seen: list[Any] = []

    def describe(self) -> Any:
        return self.lm.describe()

    @property
    def lead(self) -> Any:  # part of what files a score (a model with a BOS lead is filed apart)
        return self.lm.lead

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> Any:
        self.seen += list(requests)
        return self.lm.loglikelihood(requests)

    def generate(self, requests: Sequence[GenerationRequest]) -> Any:
        self.seen += list(requests)
        return self.lm.generate(requests)


def test_hits_are_exact_and_only_misses_are_forwarded(smol: Any, tmp_path: Path) -> None:
    first = _requests(["a gem", "a mess"])
    direct = smol.loglikelihood(first)
    spy = Counting(smol)
    cached = CachedLM(spy, tmp_path / "scores.sqlite")
    assert cached.loglikelihood(first) == direct  # all misses: the same call as the uncached one
    assert spy.seen == first
    spy.seen.clear()
    assert cached.loglikelihood(first) == direct and spy.seen == []  # all hits, bit-identical

    mixed = _requests(["a mess", "truly moving"]) + first[:1]
    out = CachedLM(spy, tmp_path / "scores.sqlite").loglikelihood(mixed)  # a new process, the same file
    assert spy.seen == _requests(["truly moving"])
    assert out[:2] == direct[2:] and out[-1] == direct[0]
    assert [r.logprob for r in out[2:4]] == pytest.approx([r.logprob for r in smol.loglikelihood(mixed[2:4])],
                                                         abs=1e-4)
    wrapped = CachedLM(smol, tmp_path / "scores.sqlite")
    chat = [{"role": "user", "content": "Review: a gem\nSentiment?"}]
    assert wrapped.describe() == smol.describe()
    assert wrapped.apply_chat_template(chat) == smol.apply_chat_template(chat)  # chat prompts render the same


def test_generation_is_cached_too(smol: Any, tmp_path: Path) -> None:
    req = [GenerationRequest("France: Paris\nJapan: Tokyo\n", "Italy:", max_new_tokens=4)]
    spy = Counting(smol)
    cached = CachedLM(spy, tmp_path / "scores.sqlite")
    text = cached.generate(req)
    assert cached.generate(req) == text == smol.generate(req) and len(spy.seen) == 1


def test_key_separates_weights_dtype_and_quantization() -> None:
    base = {"weights_sha256": "ab" * 32, "dtype": "float32", "quantization": "none"}
    keys = {model_key(base), model_key({**base, "dtype": "bfloat16"}), model_key({**base, "weights_sha256": "cd"}),
            model_key({**base, "quantization": "4bit"})}
    assert len(keys) == 4 and model_key(dict(base)) == model_key(base)
    with pytest.raises(IclkitError, match="weights hash"):
        model_key({"dtype": "float32"})


def test_unreadable_cache_file_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "scores.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IclkitError, match="score cache"):
        ScoreCache(bad)


def test_runs_with_a_cache_give_identical_records(tmp_path: Path) -> None:
    db = tmp_path / "scores.sqlite"
    kwargs: dict[str, Any] = dict(shots=(0, 1), n_episodes=2, n_query=2, progress=False, score_cache=db)
    first = evaluate("movie-sentiment", **kwargs)
    with sqlite3.connect(db) as con:
        stored = con.execute("SELECT COUNT(*) FROM loglikelihood").fetchone()[0]
    assert 0 < stored <= 4 * 2 * 2  # 4 episodes x 2 queries x 2 labels, repeated prompts stored once
    second = evaluate("movie-sentiment", **kwargs)
    assert second.records() == first.records() and second.summary == first.summary
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM loglikelihood").fetchone()[0] == stored
