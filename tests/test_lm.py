"""The HF backend on the real SmolLM2: batched scores equal a naive one-at-a-time forward pass."""

from __future__ import annotations

import pytest
import torch

from iclkit.errors import IclkitError
from iclkit.lm import GenerationRequest, LoglikelihoodRequest

DEMO = "Review: a gorgeous, witty film\nSentiment: positive\n\nReview: dull and lifeless\nSentiment: negative\n\n"
REQUESTS = [
    LoglikelihoodRequest(DEMO, "Review: loved it\nSentiment:", " positive"),
    LoglikelihoodRequest(DEMO, "Review: a long, meandering, overstuffed story that never finds its feet\nSentiment:",
                         " negative"),
    LoglikelihoodRequest("", "Review: fine\nSentiment:", " positive"),
    LoglikelihoodRequest("", "Review: fine\nSentiment:", " mildly positive overall"),
    LoglikelihoodRequest(DEMO * 2, "Review: x\nSentiment:", " negative"),
    LoglikelihoodRequest(DEMO * 2, "Review: x\nSentiment:", " positive"),
    LoglikelihoodRequest(DEMO, "Review: loved it\nSentiment:", " negative"),
]


def naive_logprob(lm, req: LoglikelihoodRequest) -> float:
    """One request, one full forward pass, no padding, no batching."""
    ctx = lm.request_ids(req.prefix, req.context)  # the backend's defined tokenization of the prompt
    cont = lm.tokenize(req.continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = lm.model(ids).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    return float(sum(lp[len(ctx) + i - 1, t] for i, t in enumerate(cont)))


def test_batched_loglikelihood_equals_naive_forward(smol):
    got = smol.loglikelihood(REQUESTS)
    for req, res in zip(REQUESTS, got):
        assert res.logprob == pytest.approx(naive_logprob(smol, req), abs=1e-4)
        assert res.n_tokens == len(smol.tokenize(req.continuation))


@pytest.mark.parametrize("batch_size", [1, 7])
def test_batch_size_does_not_change_scores(smol, batch_size):
    """Guarantee: the batch size changes no prediction and moves a log-prob by at most 1e-4 (other batch shapes take
    other fp32 kernels and cache paths: measured up to 2e-5 between sizes 1 and 16)."""
    old = smol.batch_size
    try:
        smol.batch_size = batch_size
        small = smol.loglikelihood(REQUESTS)
        smol.batch_size = 16
        many = smol.loglikelihood(REQUESTS)
    finally:
        smol.batch_size = old
    assert [r.greedy for r in small] == [r.greedy for r in many]
    for a, b in zip(small, many):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    assert _best_labels(small) == _best_labels(many)


def _best_labels(results):
    """The best-scoring continuation of each prompt in REQUESTS (the prediction ICL would make)."""
    best = {}
    for req, res in zip(REQUESTS, results):
        key = (req.prefix, req.context)
        if key not in best or res.logprob > best[key][0]:
            best[key] = (res.logprob, req.continuation)
    return {k: v[1] for k, v in best.items()}


def test_generation_is_greedy_and_batch_independent(smol):
    reqs = [GenerationRequest("Country: France\nCapital: Paris\n\n", "Country: Italy\nCapital:", 6),
            GenerationRequest("", "Country: Germany\nCapital:", 6)]
    batched = smol.generate(reqs)
    single = [smol.generate([r])[0] for r in reqs]
    assert batched == single
    assert batched[0].strip() == "Rome"


def test_prompt_longer_than_context_window_is_a_clear_error(smol):
    long = "word " * (smol.context_length + 10)
    with pytest.raises(IclkitError) as e:
        smol.loglikelihood([LoglikelihoodRequest(long, "Review: x\nSentiment:", " positive")])
    assert "context window" in e.value.message


def test_prefix_shared_generation_equals_transformers_generate_on_real_episodes(smol):
    """The default run's open-answer tasks at 0, 1 and 4 shots: decoding from each episode's cached demonstrations
    gives the texts ``transformers``' ``generate`` gives on the full prompts, whatever the batch size."""
    from iclkit.episodes import EpisodeConfig, sample_episodes
    from iclkit.data.tasks import load_task
    from iclkit.lm.hf import HFCausalLM
    from iclkit.prompts import load_prompt

    requests = []
    for name in ("nationality", "past-tense", "country-capital"):
        task = load_task(name)
        prompt = load_prompt(task.spec.prompt)
        for ep in sample_episodes(task, EpisodeConfig(shots=(0, 1, 4), n_episodes=2, n_query=3, seed=3)):
            rendered = [prompt.render(ep.support, q) for q in ep.query]
            requests += [GenerationRequest(r.prefix, r.context, 8, prompt.stop) for r in rendered]
    assert len({r.prefix for r in requests}) > 6 and smol.scoring_path == "prefix-shared"
    full = HFCausalLM(smol.model, smol.tokenizer, share_prefix=False, info=smol.describe())
    assert full.scoring_path == "full-sequence"
    want = full.generate(requests)
    assert sum(bool(t.strip()) for t in want) > len(want) // 2  # real answers, not empty strings
    for rows in (1, 5, 16):
        shared = HFCausalLM(smol.model, smol.tokenizer, batch_size=rows, info=smol.describe())
        assert shared.generate(requests) == want
