"""bitsandbytes 8-bit and 4-bit loading goes through the same scoring path (runs on CPU with bnb ≥ 0.45)."""

from __future__ import annotations

import pytest

from iclkit.lm import LoglikelihoodRequest, ModelSpec, load_lm

REQS = [LoglikelihoodRequest("Review: great film\nSentiment: positive\n\n", "Review: awful\nSentiment:", " negative"),
        LoglikelihoodRequest("Review: great film\nSentiment: positive\n\n", "Review: awful\nSentiment:", " positive")]


@pytest.mark.parametrize("bits,tol", [("8bit", 0.5), ("4bit", 3.0)])
def test_quantized_model_scores_close_to_fp32(smol, bits, tol):
    lm = load_lm(ModelSpec(quantization=bits, device="cpu"))
    assert lm.describe()["quantization"] == bits
    assert type(lm.model.model.layers[0].mlp.up_proj).__module__.startswith("bitsandbytes")
    ref = [r.logprob for r in smol.loglikelihood(REQS)]
    got = [r.logprob for r in lm.loglikelihood(REQS)]
    assert got[0] > got[1]  # still prefers the right label
    assert all(abs(a - b) < tol for a, b in zip(ref, got))
