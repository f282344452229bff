"""Calibrated ICL: each formula against a hand computation and an independent numpy reference (with the published
form where variants disagree), the requests each calibration adds and where they sit in the prompt (shared, per-query
and chat prompts, checked against request strings written here and a naive one-request-at-a-time scoring), the
option combinations refused, and the direction of the effect where raw ICL collapses."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pytest
import torch

import iclkit
from iclkit.analysis.paired import compare
from iclkit.cli import main
from iclkit.data.tasks import load_task
from iclkit.embeddings import EmbeddingCache, LMEncoder
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.learners import calibration as cal
from iclkit.learners.base import argmax_label
from iclkit.learners.icl import ICL, CachedEmbed
from iclkit.lm.base import LoglikelihoodRequest
from iclkit.prompts import load_prompt

ln = math.log
# A small fixed table: label log-likelihoods of three queries and of two content-free inputs, chosen so that every
# normalised probability is a round number (q1: 0.75/0.25, q2: 0.5/0.5, q3: 0.25/0.75).
Q = [{"a": ln(0.3), "b": ln(0.1)}, {"a": ln(0.2), "b": ln(0.2)}, {"a": ln(0.05), "b": ln(0.15)}]
# unnormalised label probabilities 0.6/0.2 and 0.1/0.1 (normalised: 0.75/0.25 and 0.5/0.5)
CF = [{"a": ln(0.6), "b": ln(0.2)}, {"a": ln(0.1), "b": ln(0.1)}]


def close(a: Mapping[str, float], b: Mapping[str, float], tol: float = 1e-12) -> bool:
    return set(a) == set(b) and all(abs(a[k] - b[k]) < tol for k in a)


def test_content_free_prior_averages_unnormalised_probabilities_by_hand():
    # Zhao et al.'s get_p_content_free: mean of 0.6/0.2 and 0.1/0.1 is 0.35/0.15, normalised once: 0.7/0.3.
    # (Normalising each input first would give the mean of 0.75/0.25 and 0.5/0.5: 0.625/0.375.)
    assert close(cal.content_free_prior(CF), {"a": 0.7, "b": 0.3})
    # p(y|x) / p_cf(y): q1 → 0.75/0.7 = 15/14 and 0.25/0.3 = 5/6; q2 → 5/7 and 5/3
    assert close(cal.contextual(Q[0], CF), {"a": ln(15 / 14), "b": ln(5 / 6)})
    assert close(cal.contextual(Q[1], CF), {"a": ln(5 / 7), "b": ln(5 / 3)})
    labels = ["a", "b"]
    assert argmax_label(Q[1], labels) == "a"  # a tie: the first label
    assert argmax_label(cal.contextual(Q[1], CF), labels) == "b"  # the prior favoured a, so the tie goes to b
    # where the two averages disagree: p(y|x) = 0.65/0.35. Reference prior: 0.65/0.7 = 0.93 < 0.35/0.3 = 1.17 → b;
    # per-input normalised prior: 0.65/0.625 = 1.04 > 0.35/0.375 = 0.93 → a
    q = {"a": ln(0.13), "b": ln(0.07)}
    assert argmax_label(cal.contextual(q, CF), labels) == "b"
    assert argmax_label(cal.divide(q, {"a": 0.625, "b": 0.375}), labels) == "a"


def test_content_free_prior_keeps_the_ratio_of_underflowing_probabilities():
    # exp(−800) is 0 in float64; the first input's unnormalised probabilities are e^-800 · (1, 1/3), the second's
    # e^-900 · (1, 1) (e^-100 times smaller): the mean is 0.75/0.25 up to 4e-44
    tables = [{"a": -800.0, "b": -800.0 - ln(3)}, {"a": -900.0, "b": -900.0}]
    assert close(cal.content_free_prior(tables), {"a": 0.75, "b": 0.25})


def _random_tables(rng: random.Random, n: int, labels: Sequence[str]) -> list[dict[str, float]]:
    return [{lab: rng.uniform(-12, -0.1) for lab in labels} for _ in range(n)]


def _matrix(tables: Sequence[Mapping[str, float]], labels: Sequence[str]) -> np.ndarray:
    return np.array([[t[lab] for lab in labels] for t in tables])


@pytest.mark.parametrize("seed", range(20))
def test_content_free_prior_matches_numpy(seed: int):
    rng = random.Random(seed)
    labels = [f"l{i}" for i in range(rng.randint(2, 6))]
    tables = _random_tables(rng, rng.randint(1, 4), labels)
    mean = np.exp(_matrix(tables, labels)).mean(axis=0)  # the released code's np.mean(all_p_y, axis=0) ...
    want = mean / mean.sum()  # ... then p_y / np.sum(p_y)
    got = cal.content_free_prior(tables)
    np.testing.assert_allclose([got[lab] for lab in labels], want, rtol=1e-12, atol=0)


def test_dcpmi_by_hand():
    domain = {"a": ln(0.5), "b": ln(0.05)}
    assert close(cal.dcpmi(Q[0], domain), {"a": ln(0.6), "b": ln(2.0)})  # 0.3/0.5 and 0.1/0.05


def test_batch_by_hand_two_labels():
    # the batch prior of q1 and q2 is (0.75 + 0.5) / 2 = 0.625 and 0.375; calibrated: p(y|x) − p̂(y)
    assert close(cal.mean_probs(Q[:2]), {"a": 0.625, "b": 0.375})
    got = cal.batch(Q[:2])
    assert close(got[0], {"a": 0.125, "b": -0.125}) and close(got[1], {"a": -0.125, "b": 0.125})
    # all three queries: a uniform prior (0.5, 0.5)
    want = [{"a": 0.25, "b": -0.25}, {"a": 0.0, "b": 0.0}, {"a": -0.25, "b": 0.25}]
    assert all(close(c, w) for c, w in zip(cal.batch(Q), want))
    assert cal.batch([]) == []


# Three labels, four queries (log-likelihoods; the normalised p(y|x) in the comments), batch prior 0.5 / 0.4 / 0.1.
THREE = [{"a": ln(0.1), "b": ln(0.3), "c": ln(0.1)},  # 0.2 / 0.6 / 0.2
         {"a": ln(0.7), "b": ln(0.25), "c": ln(0.05)},  # 0.7 / 0.25 / 0.05
         {"a": ln(0.05), "b": ln(0.045), "c": ln(0.005)},  # 0.5 / 0.45 / 0.05
         {"a": ln(0.6), "b": ln(0.3), "c": ln(0.1)}]  # 0.6 / 0.3 / 0.1


def test_batch_calibration_is_the_papers_additive_form_with_three_labels():
    labels = ["a", "b", "c"]
    prior = cal.mean_probs(THREE)
    assert close(prior, {"a": 0.5, "b": 0.4, "c": 0.1})
    want = [{"a": -0.3, "b": 0.2, "c": 0.1}, {"a": 0.2, "b": -0.15, "c": -0.05},
            {"a": 0.0, "b": 0.05, "c": -0.05}, {"a": 0.1, "b": -0.1, "c": 0.0}]
    got = cal.batch(THREE)
    assert all(close(g, w) for g, w in zip(got, want)), got
    assert [argmax_label(g, labels) for g in got] == ["b", "a", "b", "a"]
    # dividing by the batch prior instead (the form iclkit used before) picks c for the first query:
    # 0.2/0.1 = 2 > 0.6/0.4 = 1.5 > 0.2/0.5 = 0.4, where p − p̂ ranks b (+0.2) over c (+0.1)
    assert argmax_label(cal.divide(THREE[0], prior), labels) == "c"


@pytest.mark.parametrize("seed", range(20))
def test_batch_calibration_matches_numpy_and_centres_every_label(seed: int):
    rng = random.Random(seed)
    labels = [f"l{i}" for i in range(rng.randint(2, 6))]
    tables = _random_tables(rng, rng.randint(1, 16), labels)
    s = _matrix(tables, labels)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    want = p - p.mean(axis=0)  # Zhou et al. Eq. 1-2
    got = _matrix(cal.batch(tables), labels)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # each label's calibrated scores average to 0 over the episode (the ratio form's do not: its exp averages to 1)
    assert np.abs(got.mean(axis=0)).max() < 1e-12
    if len(labels) == 2:  # two labels: dividing by the prior picks the same label
        prior = cal.mean_probs(tables)
        assert [argmax_label(c, labels) for c in cal.batch(tables)] == \
            [argmax_label(cal.divide(t, prior), labels) for t in tables]


@pytest.mark.parametrize("seed", range(20))
def test_uniform_content_free_prior_leaves_predictions_unchanged(seed: int):
    rng = random.Random(seed)
    labels = [f"l{i}" for i in range(rng.randint(2, 6))]
    queries = _random_tables(rng, 10, labels)
    uniform = [{lab: -1.7 for lab in labels}]  # any constant: p_cf = 1/n for every label
    for q in queries:
        assert argmax_label(cal.contextual(q, uniform), labels) == argmax_label(q, labels)


# one episode per LM call, so every count below is per episode (with several per call, the requests their calls
# share, e.g. DC-PMI's premise, are scored once per call: tests/test_dry_run.py)
SMALL = dict(shots=(0, 2), n_episodes=2, n_query=4, seed=1, prompt="sentiment", progress=False, episode_batch=1)


@pytest.fixture(scope="module")
def counted(smol, data_dir, tmp_path_factory, counting_lm):
    """The same sst2 episodes run as raw ICL alone and as raw + three calibrations, counting LM requests."""
    import iclkit.runner.model as model

    out = {}
    for name, calibration in (("plain", "none"), ("calibrated", "none,contextual,dcpmi,batch")):
        lm = counting_lm(smol)
        original = model.load_lm
        model.load_lm = lambda spec, lm=lm: lm
        try:
            folder = tmp_path_factory.mktemp(name) / "run"
            result = iclkit.evaluate("sst2", methods=["icl"], calibration=calibration, out=folder, **SMALL)
        finally:
            model.load_lm = original
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


CONTENT_FREE_CONTEXTS = {"Review: N/A\nSentiment:", "Review: \nSentiment:", "Review: [MASK]\nSentiment:"}


def test_content_free_requests_continue_each_episode_prompt_in_the_query_slot(counted):
    """Contextual calibration's extra requests: the content-free text where the query's text goes (same template,
    same answer cue), after the same prefix the queries of the episode continue, with the same answer words."""
    plain, _ = counted["plain"]
    calibrated, _ = counted["calibrated"]
    extra = [r for r in calibrated if r not in set(plain)]
    cf = [r for r in extra if r.context != "Sentiment:"]  # the rest: DC-PMI's domain premise
    assert {r.context for r in cf} == CONTENT_FREE_CONTEXTS
    assert {r.continuation for r in cf} == {r.continuation for r in plain} == {" negative", " positive"}
    assert {r.prefix for r in cf} == {r.prefix for r in plain}  # each episode's demonstrations, no other text
    per_prefix = Counter(r.prefix for r in cf)
    episodes_per_prefix = Counter(r.prefix for r in plain[::2 * 4])  # the first request of each episode
    assert all(per_prefix[p] == n * 3 * 2 for p, n in episodes_per_prefix.items()), (per_prefix, episodes_per_prefix)


def test_records_keep_raw_scores_and_name_each_calibration(counted):
    _, result = counted["calibrated"]
    by = {(r.method, r.episode_hash): r for r in result.results}
    assert {r.method for r in result.results} == {"icl", "icl+contextual", "icl+dcpmi", "icl+batch"}
    for (method, h), r in by.items():
        if method == "icl":
            continue
        raw = by[("icl", h)]
        for p, q in zip(r.predictions, raw.predictions):
            assert close(p.extra["raw_scores"], {k: round(v, 6) for k, v in q.scores.items()}, 1e-9)
            assert p.correct == (p.predicted == p.gold) and p.predicted == argmax_label(p.scores, r.labels)
    manifest = result.manifest["methods"]
    assert manifest["sst2/icl+batch"]["transductive"] is True
    assert manifest["sst2/icl+contextual"]["transductive"] is False
    assert manifest["sst2/icl+dcpmi"]["domain_premise"] == "Sentiment:"
    assert manifest["sst2/icl+contextual"]["content_free"] == ["N/A", "", "[MASK]"]


def naive_logprob(lm, r: LoglikelihoodRequest) -> float:
    """The reference: one plain forward pass over the request's ids, log_softmax, gather (no cache, no batching)."""
    ctx = lm.request_ids(r.prefix, r.context)
    cont = lm.tokenize(r.continuation)
    with torch.inference_mode():
        logits = lm.model(torch.tensor([ctx + cont])).logits[0].float()
    lp = torch.log_softmax(logits[len(ctx) - 1:-1], dim=-1)
    return float(lp.gather(-1, torch.tensor(cont)[:, None]).sum())


def test_contextual_calibration_with_similar_demonstrations(smol, data_dir, tmp_path, counting_lm):
    """--demos similar: each query's own prompt gets its own content-free requests, and each query is calibrated by
    the p_cf of its own prompt — checked against requests written here, scored one at a time, and the released
    code's formula in numpy."""
    prompt = load_prompt("sentiment")
    ep = sample_episodes(load_task("sst2"), EpisodeConfig(shots=(2,), n_episodes=1, n_query=3, seed=2))[0]
    lm = counting_lm(smol)
    embed = CachedEmbed(EmbeddingCache(LMEncoder(smol), root=tmp_path, progress=False))
    icl = ICL(lm=lm, prompt=prompt, demos="similar", demos_per_query=2, embed=embed,
              calibrations=("none", "contextual", "dcpmi"))
    out = icl.predict_outputs([(ep.support, ep.labels, ep.query)])[0]
    words = {lab: f" {lab}" for lab in ep.labels}
    prefixes = {}
    for q in ep.query:
        mine = [r for r in lm.requests if r.context == f"Review: {q.fields['text']}\nSentiment:"]
        assert len({r.prefix for r in mine}) == 1 and {r.continuation for r in mine} == set(words.values())
        prefixes[q.id] = mine[0].prefix
    assert len(set(prefixes.values())) > 1, "the episode no longer gives its queries different prompts"
    cf = [r for r in lm.requests if r.context in CONTENT_FREE_CONTEXTS]
    assert Counter(r.prefix for r in cf) == {p: 3 * 2 for p in set(prefixes.values())}
    p_cfs = set()
    for q, pred in zip(ep.query, out["icl+contextual"]):
        pre = prefixes[q.id]
        unnorm = np.array([[math.exp(naive_logprob(smol, LoglikelihoodRequest(pre, ctx, words[lab])))
                            for lab in ep.labels] for ctx in sorted(CONTENT_FREE_CONTEXTS)]).mean(axis=0)
        p_cf = unnorm / unnorm.sum()
        assert np.allclose([pred.extra["p_cf"][lab] for lab in ep.labels], p_cf, atol=1e-4), (pred.extra, p_cf)
        raw = np.array([naive_logprob(smol, LoglikelihoodRequest(pre, f"Review: {q.fields['text']}\nSentiment:",
                                                                 words[lab])) for lab in ep.labels])
        p = np.exp(raw - raw.max())
        p /= p.sum()
        assert pred.predicted == ep.labels[int(np.argmax(p / p_cf))]
        p_cfs.add(tuple(round(v, 3) for v in p_cf))
    assert len(p_cfs) > 1  # one prior per prompt, not one per episode
    with pytest.raises(IclkitError) as e:  # batch calibration would mix the queries' contexts
        ICL(lm=lm, prompt=prompt, demos="similar", embed=embed, calibrations=("none", "batch"))
    assert e.value.field == "demos"


def test_contextual_calibration_with_interleaved_demonstrations(smol, data_dir, counting_lm):
    """--demos interleaved: a query's prompt is its episode's support round-robin by label, starting from a label
    its text picks, so an episode has up to two prompts here. The content-free requests of each sit in its query
    slot after that same prefix, and each query is calibrated by its own prompt's p_cf (released code's formula,
    requests scored one at a time)."""
    prompt = load_prompt("sentiment")
    ep = sample_episodes(load_task("sst2"), EpisodeConfig(shots=(2,), n_episodes=1, n_query=6, seed=4))[0]
    lm = counting_lm(smol)
    icl = ICL(lm=lm, prompt=prompt, demos="interleaved", calibrations=("none", "contextual"))
    out = icl.predict_outputs([(ep.support, ep.labels, ep.query)])[0]
    by_label = {lab: [d for d in ep.support if d.label == lab] for lab in ep.labels}
    # the two round-robin prefixes, written out: one starting from each label
    candidates = {"".join(f"Review: {d.fields['text']}\nSentiment: {d.label}\n\n"
                          for r in range(2) for lab in order for d in [by_label[lab][r]])
                  for order in (ep.labels, ep.labels[::-1])}
    words = {lab: f" {lab}" for lab in ep.labels}
    prefixes = {}
    for q in ep.query:
        mine = [r for r in lm.requests if r.context == f"Review: {q.fields['text']}\nSentiment:"]
        assert len({r.prefix for r in mine}) == 1 and {r.continuation for r in mine} == set(words.values())
        prefixes[q.id] = mine[0].prefix
    assert set(prefixes.values()) == candidates  # both orders occur among these queries
    cf = [r for r in lm.requests if r.context in CONTENT_FREE_CONTEXTS]
    assert Counter(r.prefix for r in cf) == {p: 3 * 2 for p in candidates}
    for q, pred in zip(ep.query, out["icl+contextual"]):
        pre = prefixes[q.id]
        unnorm = np.array([[math.exp(naive_logprob(smol, LoglikelihoodRequest(pre, ctx, words[lab])))
                            for lab in ep.labels] for ctx in sorted(CONTENT_FREE_CONTEXTS)]).mean(axis=0)
        p_cf = unnorm / unnorm.sum()
        assert np.allclose([pred.extra["p_cf"][lab] for lab in ep.labels], p_cf, atol=1e-4), (pred.extra, p_cf)
        raw = np.array([naive_logprob(smol, LoglikelihoodRequest(pre, f"Review: {q.fields['text']}\nSentiment:",
                                                                 words[lab])) for lab in ep.labels])
        assert pred.predicted == ep.labels[int(np.argmax(np.exp(raw - raw.max()) / p_cf))]


# SmolLM2-Instruct's chat template, written out: the default system turn, then the user turn, then the reply opens
HEAD = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\n")
TAIL = "<|im_end|>\n<|im_start|>assistant\n"


def test_calibration_under_chat_renders_every_request_like_the_query(smol, data_dir, counting_lm):
    """--chat: the content-free inputs and the DC-PMI domain premise are chat-wrapped like the query, and every
    answer is the bare label word the query's answer is (no leading space after the assistant header)."""
    prompt = load_prompt("sentiment")
    ep = sample_episodes(load_task("sst2"), EpisodeConfig(shots=(1,), n_episodes=1, n_query=2, seed=3))[0]
    lm = counting_lm(smol)
    icl = ICL(lm=lm, prompt=prompt, chat=True, calibrations=("none", "contextual", "dcpmi", "batch"))
    out = icl.predict_outputs([(ep.support, ep.labels, ep.query)])[0]
    demos = "".join(f"Review: {d.fields['text']}\nSentiment: {d.label}\n\n" for d in ep.support)
    queries = {f"Review: {q.fields['text']}\nSentiment:{TAIL}" for q in ep.query}
    cf_contexts = {c + TAIL for c in CONTENT_FREE_CONTEXTS}
    by_context = Counter(r.context for r in lm.requests)
    assert set(by_context) == queries | cf_contexts | {f"Sentiment:{TAIL}"}
    assert {r.continuation for r in lm.requests} == set(ep.labels)  # "negative", "positive": as the query's
    for r in lm.requests:
        if r.context == f"Sentiment:{TAIL}":  # the domain premise alone, in the user turn
            assert r.prefix == HEAD
        else:  # queries and content-free inputs after the same demonstrations
            assert r.prefix == HEAD + demos
    domain = {lab: naive_logprob(smol, LoglikelihoodRequest(HEAD, f"Sentiment:{TAIL}", lab)) for lab in ep.labels}
    for pred in out["icl+dcpmi"]:
        assert close(pred.extra["domain_logprob"], domain, 1e-4)
    assert len(out["icl+batch"]) == len(ep.query)  # random demonstrations share one prompt: batch is allowed


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["run", "--no-progress", "--episodes", "1", "--n-query", "2", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("demos", ["similar", "interleaved"])
def test_batch_calibration_with_per_query_demonstrations_is_refused(tmp_path, capsys, demos):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", "movie-sentiment", "--shots", "2", "--demos", demos,
                        "--calibration", "none,batch", "--out", str(out))
    assert code == 2 and "field 'demos'" in err and f"--demos {demos}" in err and "--calibration batch" in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_calibration_lifts_macro_f1_where_raw_icl_collapses(smol, data_dir, monkeypatch):
    """AG News, 8 shots per class: raw ICL gives every query of an episode the same label; contextual and batch
    calibration, from the same scores, are better in macro-F1 on every resample of the paired bootstrap."""
    import iclkit.runner.model

    monkeypatch.setattr(iclkit.runner.model, "load_lm", lambda spec: smol)
    result = iclkit.evaluate("agnews", shots=[8], n_episodes=4, n_query=8, seed=0, prompt="agnews",
                             methods=["icl"], calibration="none,contextual,batch", progress=False)
    raw = [r for r in result.results if r.method == "icl"]
    assert all(len({p.predicted for p in r.predictions}) == 1 for r in raw), "raw ICL no longer collapses here"
    rows = {r["method"]: r for r in compare(result.results, metric="macro_f1")}
    for method in ("icl+contextual", "icl+batch"):
        assert rows[method]["n_episodes"] == 4 and rows[method]["ci_low"] > 0, rows[method]
