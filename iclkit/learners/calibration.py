"""Calibrating ICL's label scores: pure functions over per-label score tables, one per method in the literature.

Every function takes the scores ICL already computed (and, for two of them, a few extra scores) and returns new
per-label scores whose argmax is the calibrated prediction; none asks the LM for anything. ``p(y|x)`` below is the
softmax of the label scores over the episode's labels; a score table holds log-space scores (ICL's summed or
mean log-probabilities), so ``exp(score)`` is the label's unnormalised probability.

- ``contextual`` (Zhao et al. 2021, "Calibrate Before Use", §5): ``log p(y|x) − log p_cf(y)``, the paper's affine
  map with W = diag(p_cf)⁻¹, b = 0. ``p_cf`` follows the authors' released code (``get_p_content_free`` in
  tonyzhaozh/few-shot-learning): the *unnormalised* label probabilities averaged over the content-free inputs
  (same demonstrations), then normalised over the labels — not the mean of per-input normalised distributions.
- ``dcpmi`` (Holtzman et al. 2021, "Surface Form Competition"): ``log P(y | demos, x) − log P(y | domain premise)``
  with summed (unnormalised) continuation log-probabilities.
- ``batch`` (Zhou et al. 2024, "Batch Calibration", §4): the contextual prior is estimated as the mean over the
  episode's queries, ``p̂(y) = 1/M Σ_i p(y|x_i)`` (their Eq. 1), and subtracted from each query's probabilities,
  ``p(y|x) − p̂(y)`` (their Eq. 2): W = I, b = −p̂, a linear decision boundary. Transductive: a query's prediction
  depends on the other unlabelled queries of its episode. With two labels it picks the same label as dividing by
  the prior (both reduce to p(y₁|x) > p̂(y₁)); with three or more they differ.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping, Sequence

from iclkit.learners.base import softmax

Calibration = Literal["none", "contextual", "dcpmi", "batch"]
CALIBRATIONS: tuple[Calibration, ...] = ("none", "contextual", "dcpmi", "batch")
TRANSDUCTIVE: tuple[Calibration, ...] = ("batch",)  # uses the episode's other (unlabelled) queries
SHARED_CONTEXT: tuple[Calibration, ...] = ("batch",)  # assumes every query of the episode has the same prompt prefix
PAPERS: Mapping[Calibration, str] = {
    "contextual": "Zhao et al. 2021, Calibrate Before Use (contextual calibration; p_cf as in the authors' "
                  "get_p_content_free)",
    "dcpmi": "Holtzman et al. 2021, Surface Form Competition (domain-conditional PMI)",
    "batch": "Zhou et al. 2024, Batch Calibration, Eq. 1-2 (transductive)",
}
DEFAULT_CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. 2021's content-free inputs


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def log_probs(scores: Mapping[str, float]) -> dict[str, float]:
    """``log p(y|x)``: the scores log-softmax-normalised over the labels."""
    norm = _logsumexp(list(scores.values()))
    return {k: v - norm for k, v in scores.items()}


def mean_probs(tables: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean over ``tables`` of ``p(y|·)`` (softmax of each table): the batch prior p̂ of Zhou et al.'s Eq. 1."""
    if not tables:
        raise ValueError("needs at least one score table")
    probs = [softmax(t) for t in tables]
    return {k: sum(p[k] for p in probs) / len(probs) for k in tables[0]}


def content_free_prior(tables: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``p_cf``: the mean over the content-free inputs of each label's unnormalised probability ``exp(score)``,
    normalised over the labels once at the end (Zhao et al.'s ``get_p_content_free``). Computed in log space, so
    long labels whose probabilities underflow a float keep their ratios."""
    if not tables:
        raise ValueError("needs at least one score table")
    # log of the mean is logsumexp − log n; the constant cancels in the normalisation
    return softmax({k: _logsumexp([t[k] for t in tables]) for k in tables[0]})


def divide(scores: Mapping[str, float], prior: Mapping[str, float]) -> dict[str, float]:
    """``log p(y|x) − log prior(y)``: the log of p(y|x) / prior(y) (diagonal W = diag(prior)⁻¹, b = 0)."""
    lp = log_probs(scores)
    return {k: lp[k] - math.log(max(prior[k], 1e-300)) for k in scores}


def contextual(scores: Mapping[str, float], content_free: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Contextual calibration of one query's scores by the score tables of the content-free inputs."""
    return divide(scores, content_free_prior(content_free))


def dcpmi(logprobs: Mapping[str, float], domain: Mapping[str, float]) -> dict[str, float]:
    """Domain-conditional PMI: summed log-prob with the prompt minus summed log-prob after the domain premise."""
    return {k: logprobs[k] - domain[k] for k in logprobs}


def subtract(scores: Mapping[str, float], prior: Mapping[str, float]) -> dict[str, float]:
    """``p(y|x) − prior(y)`` (Zhou et al.'s Eq. 2; W = I, b = −prior)."""
    p = softmax(scores)
    return {k: p[k] - prior[k] for k in scores}


def batch(scores: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
    """Batch calibration of every query of one episode (one shared prompt prefix): ``p(y|x) − p̂(y)`` with p̂ the
    mean of ``p(y|x')`` over those queries (Zhou et al. 2024, Eq. 1-2). The calibrated scores of each label then
    sum to exactly 0 over the episode's queries."""
    if not scores:
        return []
    prior = mean_probs(scores)
    return [subtract(s, prior) for s in scores]
