"""The lead (BOS) the hf backend puts before a prompt: read from the tokenizer, counted by ``--shots auto`` at its
real length, and never a second time when a chat template writes BOS itself (Llama 3, Gemma). SmolLM2's own
tokenizer adds no BOS, so these tests load it again with one (``<|endoftext|>``, id 0) and a chat template written
here that starts with it."""

from __future__ import annotations

import pytest
import torch

from iclkit.data.tasks import load_task
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.lm import LoglikelihoodRequest
from iclkit.prompts import load_prompt
from iclkit.shots import plan_task

BOS = "<|endoftext|>"
CHAT = (BOS + "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def with_tokenizer(smol, *, adds_bos: bool):
    """SmolLM2 behind the hf backend with a tokenizer whose BOS is ``<|endoftext|>``, added to every text or not, and
    the chat template above (which writes that BOS either way); an 800-token window."""
    from transformers import AutoTokenizer

    from iclkit.lm.hf import HFCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smol.describe()["folder"], bos_token=BOS, add_bos_token=adds_bos)
    tokenizer.chat_template = CHAT
    return HFCausalLM(smol.model, tokenizer, batch_size=4, info=smol.describe(), context_length=800)


def test_the_lead_is_read_from_the_tokenizer(smol):
    assert smol.lead == [] and with_tokenizer(smol, adds_bos=True).lead == [0]
    assert with_tokenizer(smol, adds_bos=False).lead == []


def test_a_chat_template_that_writes_bos_gets_no_second_one(smol):
    lm = with_tokenizer(smol, adds_bos=True)
    plain = "Review: a fine film\nSentiment:"
    # plain text: the backend's lead, as the tokenizer itself adds it
    assert lm.request_ids(plain, "") == lm.tokenizer(plain)["input_ids"] and lm.request_ids(plain, "")[:2] != [0, 0]
    text = lm.apply_chat_template([{"role": "user", "content": plain}])
    assert text.startswith(BOS)
    ids = lm.request_ids(text, "")
    assert ids == lm.tokenizer(text, add_special_tokens=False)["input_ids"]  # the text's own tokens, BOS once
    assert ids[0] == 0 and ids.count(0) == 1
    # scored through the prefix cache: the same as one plain forward pass over those ids
    request = LoglikelihoodRequest(text, "", "positive")
    answer = lm.tokenize("positive")
    with torch.inference_mode():
        logits = smol.model(torch.tensor([ids + answer])).logits[0].float()
    naive = torch.log_softmax(logits[len(ids) - 1:-1], -1).gather(-1, torch.tensor(answer)[:, None]).sum()
    assert lm.loglikelihood([request])[0].logprob == pytest.approx(float(naive), abs=1e-4)


def test_shots_auto_counts_the_lead_as_the_backend_sends_it(smol):
    task = load_task("movie-sentiment")
    prompt = load_prompt(task.spec.prompt)
    lead, none = with_tokenizer(smol, adds_bos=True), with_tokenizer(smol, adds_bos=False)
    plain = plan_task(task, [prompt], lead), plan_task(task, [prompt], none)
    assert plain[0].max_shots > 1
    # plain prompts: the one BOS token on top of the same text
    assert {k: v - 1 for k, v in plain[0].prompt_tokens.items()} == plain[1].prompt_tokens
    # chat prompts start with BOS text: counted once, as part of the text, with or without a lead
    chat = plan_task(task, [prompt], lead, chat=True), plan_task(task, [prompt], none, chat=True)
    assert chat[0].prompt_tokens == chat[1].prompt_tokens
    k = chat[0].max_shots
    for ep in sample_episodes(task, EpisodeConfig(shots=(k,), n_episodes=3, n_query=4, seed=0)):
        for q in ep.query:
            r = prompt.render_chat(ep.support, q, ep.labels, lead.apply_chat_template)
            for c in r.continuations.values():
                ids = lead.request_ids(r.prefix, r.context)
                assert ids.count(0) == 1 and len(ids) + len(lead.tokenize(c)) <= chat[0].prompt_tokens[k] <= 800
