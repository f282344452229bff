"""Calibrating ICL's label scores: pure functions over per-label score tables, one per method in the literature.

Every function takes the scores ICL already computed (and, for two of them, a few extra scores) and returns new
per-label scores whose argmax is the calibrated prediction; none asks the LM for anything. ``p(y|x)`` below is the
softmax of the label scores over the episode's labels.

- ``contextual`` (Zhao et al. 2021, "Calibrate Before Use"): ``log p(y|x) − log p_cf(y)``, where ``p_cf`` is the
  mean of ``p(y|content-free input)`` over a few content-free inputs with the same demonstrations; the paper's
  W = diag(p_cf)⁻¹, b = 0.
- ``dcpmi`` (Holtzman et al. 2021, "Surface Form Competition"): ``log P(y | demos, x) − log P(y | domain premise)``
  with summed (unnormalised) continuation log-probabilities.
- ``batch`` (Zhou et al. 2024, "Batch Calibration"): ``log p(y|x) − log mean_x' p(y|x')`` over the episode's
  queries. Transductive: a query's prediction depends on the other unlabelled queries of its episode.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping, Sequence

from iclkit.learners.base import softmax

Calibration = Literal["none", "contextual", "dcpmi", "batch"]
CALIBRATIONS: tuple[Calibration, ...] = ("none", "contextual", "dcpmi", "batch")
TRANSDUCTIVE: tuple[Calibration, ...] = ("batch",)  # uses the episode's other (unlabelled) queries
PAPERS: Mapping[Calibration, str] = {
    "contextual": "Zhao et al. 2021, Calibrate Before Use (contextual calibration)",
    "dcpmi": "Holtzman et al. 2021, Surface Form Competition (domain-conditional PMI)",
    "batch": "Zhou et al. 2024, Batch Calibration (transductive)",
}
DEFAULT_CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. 2021's content-free inputs


def log_probs(scores: Mapping[str, float]) -> dict[str, float]:
    """``log p(y|x)``: the scores log-softmax-normalised over the labels."""
    top = max(scores.values())
    norm = top + math.log(sum(math.exp(v - top) for v in scores.values()))
    return {k: v - norm for k, v in scores.items()}


def mean_probs(tables: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean over ``tables`` of ``p(y|·)`` (softmax of each table): ``p_cf`` or the batch prior."""
    if not tables:
        raise ValueError("needs at least one score table")
    probs = [softmax(t) for t in tables]
    return {k: sum(p[k] for p in probs) / len(probs) for k in tables[0]}


def divide(scores: Mapping[str, float], prior: Mapping[str, float]) -> dict[str, float]:
    """``log p(y|x) − log prior(y)``: the log of p(y|x) / prior(y) (diagonal W = diag(prior)⁻¹, b = 0)."""
    lp = log_probs(scores)
    return {k: lp[k] - math.log(max(prior[k], 1e-300)) for k in scores}


def contextual(scores: Mapping[str, float], content_free: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Contextual calibration of one query's scores by the score tables of the content-free inputs."""
    return divide(scores, mean_probs(content_free))


def dcpmi(logprobs: Mapping[str, float], domain: Mapping[str, float]) -> dict[str, float]:
    """Domain-conditional PMI: summed log-prob with the prompt minus summed log-prob after the domain premise."""
    return {k: logprobs[k] - domain[k] for k in logprobs}


def batch(scores: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
    """Batch calibration of every query of one episode by the mean label probability over those queries; the mean
    over the queries of ``exp(calibrated score)`` is then exactly 1 for every label."""
    if not scores:
        return []
    prior = mean_probs(scores)
    return [divide(s, prior) for s in scores]
