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


def test_prefix_shared_generation_equals_transformers_generate_on_real_episodes(smol, monkeypatch):
    """The default run's open-answer tasks at 0, 1 and 4 shots: decoding from each episode's cached demonstrations
    gives the texts ``transformers``' ``generate`` gives on the full prompts, whatever the batch size: one prefix
    per batch (1 and 5 rows), or several episodes' prefixes decoding together (``decode_packed``, 16 rows), with
    finished rows leaving the batch as they finish."""
    import iclkit.lm.hf as hf
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
    packed: list[int] = []

    def counted(*args, **kwargs):
        packed.append(len(args[5]))  # prefixes in this pack
        return real(*args, **kwargs)

    real = hf.decode_packed
    monkeypatch.setattr(hf, "decode_packed", counted)
    for rows in (1, 5, 16):
        shared = HFCausalLM(smol.model, smol.tokenizer, batch_size=rows, info=smol.describe())
        assert shared.generate(requests) == want, rows
        if rows != 5:  # 5 rows hold one episode's 3 queries, not two: packs only at 16
            assert (max(packed, default=0) > 1) == (rows == 16), (rows, packed)
        packed.clear()


def test_converted_default_model_is_transformers_own_load_of_the_gguf(smol):
    """The embedded GGUF converted once (``weights.gguf_to_folder``, the file parsed once under ``parsed_once``)
    gives exactly the weights, config and tokenizer ``transformers`` builds from the file itself."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iclkit import resources
    from iclkit.lm.weights import parsed_once

    gguf = resources.ensure(resources.SMOLLM2_GGUF)
    import gguf as gguf_package

    before = gguf_package.GGUFReader
    with parsed_once():
        assert gguf_package.GGUFReader(str(gguf)) is gguf_package.GGUFReader(str(gguf))  # one parse per file
    assert gguf_package.GGUFReader is before  # the package as it was after the block
    own = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ours, theirs = smol.model.state_dict(), own.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "rope_theta",
            "rms_norm_eps", "vocab_size", "tie_word_embeddings", "max_position_embeddings", "bos_token_id",
            "eos_token_id")
    assert {k: getattr(smol.model.config, k, None) for k in keys} == {k: getattr(own.config, k, None) for k in keys}
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert tok.get_vocab() == smol.tokenizer.get_vocab()
    text = "Review: a masterpiece four years in the making .\nSentiment: positive\n\nÜber café 東京 123"
    assert tok(text)["input_ids"] == smol.tokenizer(text)["input_ids"]


def test_generic_tokenizer_loaded_directly_is_the_one_autotokenizer_builds(smol):
    """``load_tokenizer`` skips ``AutoTokenizer``'s class lookup only for the generic fast class, and builds the
    same tokenizer: class, vocabulary, special tokens, chat template and ids."""
    from transformers import AutoTokenizer

    from iclkit.lm.weights import load_tokenizer

    folder = smol.describe()["folder"]
    direct, auto = load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    assert type(direct) is type(auto)
    assert direct.get_vocab() == auto.get_vocab()
    assert (direct.pad_token_id, direct.eos_token_id, direct.bos_token_id, direct.unk_token_id) == \
           (auto.pad_token_id, auto.eos_token_id, auto.bos_token_id, auto.unk_token_id)
    assert direct.chat_template == auto.chat_template and direct.chat_template
    text = "<|im_start|>user\nCountry: Peru\nCapital:<|im_end|> Über café 東京 123\n\n"
    assert direct(text)["input_ids"] == auto(text)["input_ids"]
    assert direct("", add_special_tokens=True)["input_ids"] == auto("", add_special_tokens=True)["input_ids"]
    messages = [{"role": "user", "content": "Country: Peru\nCapital:"}]
    assert direct.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
           auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
