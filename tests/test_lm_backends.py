"""The LM protocol and its backend registry: a second backend runs end to end, wrappers keep the whole protocol,
and the HF backend leaves no process-wide trace (threads, batch-size back-off, transformers logging)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest
import torch

from iclkit.errors import IclkitError
from iclkit.lm import (LM, GenerationRequest, Loglikelihood, LoglikelihoodRequest, ModelSpec, available_backends,
                       load_lm, register_backend)
from iclkit.lm.backoff import run_batched
from iclkit.lm.base import Pooling
from iclkit.lm.scorecache import CachedLM


class CountingLM:
    """A second backend: the HF backend's model, with a count of the ``loglikelihood`` calls that reach it."""

    def __init__(self, inner: LM):
        self.inner = inner
        self.calls = 0

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        self.calls += 1
        return self.inner.loglikelihood(requests)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return self.inner.generate(requests)

    def tokenize(self, text: str) -> list[int]:
        return self.inner.tokenize(text)

    def token_counts(self, requests: Sequence[LoglikelihoodRequest]) -> list[int]:
        return self.inner.token_counts(requests)

    @property
    def lead(self) -> Sequence[int]:
        return self.inner.lead

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return self.inner.apply_chat_template(messages)

    def hidden_states(self, texts: Sequence[str], *, layer: int = -1, pooling: Pooling = "mean",
                      max_tokens: int = 256) -> torch.Tensor:
        return self.inner.hidden_states(texts, layer=layer, pooling=pooling, max_tokens=max_tokens)

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    @property
    def device(self) -> str:
        return self.inner.device

    def describe(self) -> Mapping[str, Any]:
        return {**self.inner.describe(), "backend": "counting"}


BUILT: list[CountingLM] = []  # every CountingLM the factory made, so a test can read the counts after a run


def _counting(spec: ModelSpec) -> CountingLM:
    BUILT.append(CountingLM(load_lm(dataclasses.replace(spec, backend="hf"))))
    return BUILT[-1]


register_backend("counting")(_counting)

REQUESTS = [LoglikelihoodRequest(p, f"Review: {q}\nSentiment:", c)
            for p in ("", "Review: a gorgeous, witty film\nSentiment: positive\n\n")
            for q in ("loved it", "a long, meandering story that never finds its feet", "fine")
            for c in (" positive", " negative", " mildly positive overall")]
RUN = ["--task", "sst2", "--prompt", "sentiment", "--shots", "0,1", "--episodes", "2", "--n-query", "4",
       "--methods", "icl", "--no-progress", "--dtype", "float32", "--device", "cpu"]


def _predictions(folder: Path) -> list[tuple[Any, ...]]:
    rows = [json.loads(line) for line in (folder / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(r["episode_id"], r["query_id"], r["prediction"], r["scores"]) for r in rows]


def test_a_registered_backend_runs_end_to_end_from_the_cli(data_dir: Path, tmp_path: Path) -> None:
    from iclkit.cli import main

    BUILT.clear()
    assert main(["run", "--backend", "counting", *RUN, "--out", str(tmp_path / "r")]) == 0
    assert len(BUILT) == 1 and BUILT[0].calls > 0  # the run scored through the registered backend
    assert main(["run", "--backend", "hf", *RUN, "--out", str(tmp_path / "h")]) == 0
    counted = _predictions(tmp_path / "r")
    assert len(counted) == 4 * 4 and counted == _predictions(tmp_path / "h")
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["model"]["backend"] == "counting"


def test_a_registered_backend_runs_end_to_end_from_the_api(data_dir: Path) -> None:
    from iclkit.episodes import EpisodeConfig
    from iclkit.runner.config import RunConfig
    from iclkit.runner.pipeline import run

    BUILT.clear()
    config = RunConfig(tasks=("sst2",), model=ModelSpec(backend="counting", dtype="float32", device="cpu"),
                       episodes=EpisodeConfig(shots=(0, 1), n_episodes=2, n_query=4), methods=("icl",),
                       prompt="sentiment")
    counted = run(config, progress=False)
    assert len(BUILT) == 1 and BUILT[0].calls > 0
    plain = run(dataclasses.replace(config, model=dataclasses.replace(config.model, backend="hf")), progress=False)
    assert [r["prediction"] for r in counted.records()] == [r["prediction"] for r in plain.records()]
    assert [r["scores"] for r in counted.records()] == [r["scores"] for r in plain.records()]


def test_unknown_backend_names_the_available_ones() -> None:
    with pytest.raises(IclkitError) as e:
        load_lm(ModelSpec(backend="no-such-backend"))
    assert e.value.field == "backend"
    assert "no-such-backend" in e.value.message
    assert e.value.hint is not None and "hf" in e.value.hint and "counting" in e.value.hint
    assert {"hf", "counting"} <= set(available_backends())


def test_a_backend_must_return_the_whole_protocol() -> None:
    register_backend("half")(lambda spec: object())
    with pytest.raises(IclkitError, match="lacks members"):
        load_lm(ModelSpec(backend="half"))


def test_an_installed_package_declares_a_backend_by_entry_point(tmp_path: Path, monkeypatch: Any) -> None:
    """``[project.entry-points."iclkit.backends"]``: the module is imported, and registers, only when chosen."""
    info = tmp_path / "iclkit_echo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: iclkit-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[iclkit.backends]\necho = iclkit_echo_backend\n")
    (tmp_path / "iclkit_echo_backend.py").write_text(
        "from iclkit.lm import register_backend, load_lm\n"
        "import dataclasses\n"
        "register_backend('echo')(lambda spec: load_lm(dataclasses.replace(spec, backend='hf')))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "echo" in available_backends() and "iclkit_echo_backend" not in sys.modules  # listed, not imported
        lm = load_lm(ModelSpec(backend="echo", dtype="float32", device="cpu"))
        assert "iclkit_echo_backend" in sys.modules
        assert isinstance(lm, LM) and lm.loglikelihood(REQUESTS[:1])[0].n_tokens == 1
    finally:
        sys.modules.pop("iclkit_echo_backend", None)


def test_cached_lm_is_the_protocol_without_attribute_forwarding(smol: Any, tmp_path: Path) -> None:
    cached = CachedLM(smol, tmp_path / "scores.sqlite")
    assert isinstance(smol, LM) and isinstance(cached, LM)
    assert not hasattr(CachedLM, "__getattr__")
    with pytest.raises(AttributeError):
        cached.tokenizer  # noqa: B018 - backend internals are not reachable through the wrapper
    messages = [{"role": "user", "content": "Review: dull\nSentiment?"}]
    text = cached.apply_chat_template(messages)
    assert text == smol.apply_chat_template(messages) and "Review: dull" in text
    texts = ["a warm, funny film", "dull"]
    assert torch.equal(cached.hidden_states(texts, layer=3, pooling="last"),
                       smol.hidden_states(texts, layer=3, pooling="last"))
    assert cached.tokenize(" positive") == smol.tokenize(" positive") != []
    assert cached.token_counts(REQUESTS[:4]) == smol.token_counts(REQUESTS[:4])
    assert (cached.context_length, cached.device) == (smol.context_length, smol.device) == (8192, "cpu")


def test_scores_do_not_depend_on_the_thread_count(smol: Any) -> None:
    """Guarantee: torch's thread count changes no prediction (the best-scoring label of every query, and whether
    greedy decoding yields it, are the same) and moves a log-prob by at most 1e-5 per scored token: fp32 reductions
    split across threads round differently (measured: up to 1.6e-5 on a 3-token label of log-prob -21, 5e-6 per
    token). The batch size, the other knob turned without meaning to change a score, is checked in test_lm.py."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = smol.loglikelihood(REQUESTS)
        torch.set_num_threads(2)
        two = smol.loglikelihood(REQUESTS)
    finally:
        torch.set_num_threads(before)
    assert all(abs(a.logprob - b.logprob) <= 1e-5 * a.n_tokens for a, b in zip(one, two))
    best = lambda res: [max(range(3), key=lambda j: res[i + j].logprob) for i in range(0, len(res), 3)]  # noqa: E731
    assert best(one) == best(two) and [r.greedy for r in one] == [r.greedy for r in two]


def test_out_of_memory_back_off_lasts_for_one_call(smol: Any) -> None:
    """A callable that, like a GPU, runs out of memory above 3 rows: the batch halves until it fits, every unit runs
    once, and the next call starts from the configured size again; the LM's own setting never moves."""
    attempts: list[int] = []
    done: list[int] = []

    def run(batch: list[int]) -> None:
        attempts.append(len(batch))
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated by the callable)")
        done.extend(batch)

    configured = smol.batch_size
    for _ in range(2):
        attempts.clear()
        done.clear()
        run_batched(run, list(range(20)), [10] * 20, smol.batch_size, tokens_per_row=1024)
        assert attempts[:4] == [16, 8, 4, 2] and set(attempts[4:]) == {2}  # halved until it fits, kept for the call
        assert sorted(done) == list(range(20))
    assert smol.batch_size == configured

    def never_fits(batch: list[int]) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated by the callable)")

    with pytest.raises(IclkitError, match="one sequence per batch"):
        run_batched(never_fits, [0, 1], [10, 10], 4, tokens_per_row=1024)


def _logging_state() -> tuple[Any, ...]:
    """transformers' logger level (its own and effective), its progress bars, and huggingface_hub's."""
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as tf_logging

    return (logging.getLogger("transformers").level, tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled(),
            are_progress_bars_disabled())


def _set_logging_state(level: int, bars: bool, hub_bars_off: bool) -> None:
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as tf_logging

    logging.getLogger("transformers").setLevel(level)
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS, if set, wins and warns
        warnings.simplefilter("ignore")
        tf_logging.enable_progress_bar() if bars else tf_logging.disable_progress_bar()
        hub_utils.disable_progress_bars() if hub_bars_off else hub_utils.enable_progress_bars()


def test_loading_leaves_transformers_logging_as_it_was(tmp_path: Path) -> None:
    original = _logging_state()
    broken = tmp_path / "broken"  # a folder transformers cannot load: the error path restores too
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    try:
        for level, bars, hub_bars_off in [(logging.WARNING, True, False), (logging.INFO, False, True),
                                          (logging.NOTSET, True, True)]:
            _set_logging_state(level, bars, hub_bars_off)
            before = _logging_state()
            assert before[0] == level and before[2:] == (bars, hub_bars_off)
            load_lm(ModelSpec(dtype="float32", device="cpu"))
            assert _logging_state() == before
            with pytest.raises(IclkitError):
                load_lm(ModelSpec(name=str(broken), device="cpu"))
            assert _logging_state() == before
    finally:
        _set_logging_state(original[0], original[2], original[3])
