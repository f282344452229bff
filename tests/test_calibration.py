"""Calibrated ICL: each formula against a hand computation, its invariants, the wiring in a real run (records,
one scoring pass plus a few extra requests), and the direction of the effect where raw ICL collapses."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Mapping, Sequence

import pytest

import iclkit
from iclkit.analysis.paired import compare
from iclkit.learners import calibration as cal
from iclkit.learners.base import argmax_label

ln = math.log
# A small fixed table: label log-likelihoods of three queries and of two content-free inputs, chosen so that every
# normalised probability is a round number (q1: 0.75/0.25, q2: 0.5/0.5, q3: 0.25/0.75).
Q = [{"a": ln(0.3), "b": ln(0.1)}, {"a": ln(0.2), "b": ln(0.2)}, {"a": ln(0.05), "b": ln(0.15)}]
CF = [{"a": ln(0.6), "b": ln(0.2)}, {"a": ln(0.1), "b": ln(0.1)}]  # p = 0.75/0.25 and 0.5/0.5 → p_cf = 0.625/0.375


def close(a: Mapping[str, float], b: Mapping[str, float], tol: float = 1e-12) -> bool:
    return set(a) == set(b) and all(abs(a[k] - b[k]) < tol for k in a)


def test_contextual_by_hand():
    assert close(cal.mean_probs(CF), {"a": 0.625, "b": 0.375})
    # p(y|x) / p_cf(y): q1 → 0.75/0.625 = 1.2 and 0.25/0.375 = 2/3; q2 → 0.8 and 4/3
    assert close(cal.contextual(Q[0], CF), {"a": ln(1.2), "b": ln(2 / 3)})
    assert close(cal.contextual(Q[1], CF), {"a": ln(0.8), "b": ln(4 / 3)})
    labels = ["a", "b"]
    assert argmax_label(Q[1], labels) == "a"  # a tie: the first label
    assert argmax_label(cal.contextual(Q[1], CF), labels) == "b"  # the prior favoured a, so the tie goes to b


def test_dcpmi_by_hand():
    domain = {"a": ln(0.5), "b": ln(0.05)}
    assert close(cal.dcpmi(Q[0], domain), {"a": ln(0.6), "b": ln(2.0)})  # 0.3/0.5 and 0.1/0.05


def test_batch_by_hand():
    # the batch prior of q1 and q2 is (0.75 + 0.5) / 2 = 0.625 and 0.375: the same as p_cf above
    assert close(cal.mean_probs(Q[:2]), {"a": 0.625, "b": 0.375})
    got = cal.batch(Q[:2])
    assert close(got[0], {"a": ln(1.2), "b": ln(2 / 3)}) and close(got[1], {"a": ln(0.8), "b": ln(4 / 3)})
    # all three queries: a uniform prior (0.5, 0.5), so only a constant is added: p(y|x) / 0.5
    want = [{"a": ln(1.5), "b": ln(0.5)}, {"a": 0.0, "b": 0.0}, {"a": ln(0.5), "b": ln(1.5)}]
    assert all(close(c, w) for c, w in zip(cal.batch(Q), want))
    assert cal.batch([]) == []


def _random_tables(rng: random.Random, n: int, labels: Sequence[str]) -> list[dict[str, float]]:
    return [{lab: rng.uniform(-12, -0.1) for lab in labels} for _ in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_uniform_content_free_prior_leaves_predictions_unchanged(seed: int):
    rng = random.Random(seed)
    labels = [f"l{i}" for i in range(rng.randint(2, 6))]
    queries = _random_tables(rng, 10, labels)
    uniform = [{lab: -1.7 for lab in labels}]  # any constant: p_cf = 1/n for every label
    for q in queries:
        assert argmax_label(cal.contextual(q, uniform), labels) == argmax_label(q, labels)


@pytest.mark.parametrize("seed", range(20))
def test_batch_calibration_equalises_the_mean_label_probability(seed: int):
    rng = random.Random(seed)
    labels = [f"l{i}" for i in range(rng.randint(2, 6))]
    queries = _random_tables(rng, rng.randint(1, 16), labels)
    calibrated = cal.batch(queries)
    # the calibrated probability p(y|x) / mean_x' p(y|x') has mean exactly 1 over the episode, for every label
    means = {lab: sum(math.exp(c[lab]) for c in calibrated) / len(calibrated) for lab in labels}
    assert all(abs(m - 1) < 1e-9 for m in means.values()), means


SMALL = dict(shots=(0, 2), n_episodes=2, n_query=4, seed=1, prompt="sentiment", progress=False)


@pytest.fixture(scope="module")
def counted(smol, data_dir, tmp_path_factory, counting_lm):
    """The same sst2 episodes run as raw ICL alone and as raw + three calibrations, counting LM requests."""
    import iclkit.runner.execute as execute

    out = {}
    for name, calibration in (("plain", "none"), ("calibrated", "none,contextual,dcpmi,batch")):
        lm = counting_lm(smol)
        original = execute.load_lm
        execute.load_lm = lambda spec, lm=lm: lm
        try:
            folder = tmp_path_factory.mktemp(name) / "run"
            result = iclkit.evaluate("sst2", methods=["icl"], calibration=calibration, out=folder, **SMALL)
        finally:
            execute.load_lm = original
        out[name] = (lm.requests, result)
    return out


def test_queries_are_scored_once_and_calibration_adds_few_requests(counted):
    plain, _ = counted["plain"]
    calibrated, result = counted["calibrated"]
    assert len(set(plain)) == len(plain) == 2 * 2 * 4 * 2  # episodes × shot counts × queries × labels
    counts = Counter(calibrated)
    assert all(counts[r] == 1 for r in plain)  # every (query, label) scored once, by the same request as raw ICL
    n_episodes = len(result.results) // 4  # one result per output and episode
    extra = len(calibrated) - len(plain)
    # per episode: 3 content-free inputs × 2 labels (contextual) + 2 labels after the domain premise (dcpmi); an
    # episode's are sent in its one LM call (the domain requests repeat across episodes: --score-cache dedups them)
    assert n_episodes == 4 and extra == n_episodes * (3 * 2 + 2)
    premises = [r for r in calibrated if r.prefix == "" and r.context == "Sentiment:"]
    assert {r.continuation for r in premises} == {" negative", " positive"}


def test_records_hold_raw_and_calibrated_scores_consistently(counted):
    _, result = counted["calibrated"]
    by = {(r.method, r.episode_hash): r for r in result.results}
    methods = {r.method for r in result.results}
    assert methods == {"icl", "icl+contextual", "icl+dcpmi", "icl+batch"}
    for (method, h), r in by.items():
        if method == "icl":
            continue
        raw = by[("icl", h)]
        for p, q in zip(r.predictions, raw.predictions):
            assert close(p.extra["raw_scores"], {k: round(v, 6) for k, v in q.scores.items()}, 1e-9)
        scores = [dict(q.scores) for q in raw.predictions]
        if method == "icl+contextual":
            expected = [cal.divide(s, p.extra["p_cf"]) for s, p in zip(scores, r.predictions)]
        elif method == "icl+dcpmi":
            expected = [cal.dcpmi(s, p.extra["domain_logprob"]) for s, p in zip(scores, r.predictions)]
        else:
            expected = cal.batch(scores)
        for p, e in zip(r.predictions, expected):
            assert close(p.scores, e, 1e-5)
            assert p.predicted == argmax_label(e, r.labels) and p.correct == (p.predicted == p.gold)
    manifest = result.manifest["methods"]
    assert manifest["sst2/icl+batch"]["transductive"] is True
    assert manifest["sst2/icl+contextual"]["transductive"] is False
    assert manifest["sst2/icl+dcpmi"]["domain_premise"] == "Sentiment:"
    assert manifest["sst2/icl+contextual"]["content_free"] == ["N/A", "", "[MASK]"]


def test_calibration_lifts_macro_f1_where_raw_icl_collapses(smol, data_dir, monkeypatch):
    """AG News, 8 shots per class: raw ICL gives every query of an episode the same label; contextual and batch
    calibration, from the same scores, are better in macro-F1 on every resample of the paired bootstrap."""
    import iclkit.runner.execute

    monkeypatch.setattr(iclkit.runner.execute, "load_lm", lambda spec: smol)
    result = iclkit.evaluate("agnews", shots=[8], n_episodes=4, n_query=8, seed=0, prompt="agnews",
                             methods=["icl"], calibration="none,contextual,batch", progress=False)
    raw = [r for r in result.results if r.method == "icl"]
    assert all(len({p.predicted for p in r.predictions}) == 1 for r in raw), "raw ICL no longer collapses here"
    rows = {r["method"]: r for r in compare(result.results, metric="macro_f1")}
    for method in ("icl+contextual", "icl+batch"):
        assert rows[method]["n_episodes"] == 4 and rows[method]["ci_low"] > 0, rows[method]
