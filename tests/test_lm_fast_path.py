"""The prefix-shared scoring path against a naive reference: one full forward pass per request, written here."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from iclkit.lm.base import LoglikelihoodRequest
from iclkit.lm.hf import HFCausalLM
from iclkit.lm.prefix import batches, packs, plan
from iclkit.prompts import load_prompt
from iclkit.types import Example

SINGLE = (" negative", " positive")
MULTI = (" negative", " quite positive", " rather negative indeed")  # one short label: shares a row with the others


def _examples(path, n, rng, max_chars=10_000):
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    picked = rng.sample([r for r in rows if len(r["text"]) <= max_chars], n)
    return [Example(id=str(i), fields={"text": r["text"]}, label=r["label"]) for i, r in enumerate(picked)]


@pytest.fixture(scope="module")
def requests_(data_dir):
    """k=0 and k=4 SST-2 prompts, queries of mixed lengths, single- and multi-token verbalizers."""
    rng = random.Random(4)
    prompt = load_prompt("sentiment")
    demos = _examples(data_dir / "sst2" / "train.jsonl", 4, rng, max_chars=80)  # short: keeps the test fast
    queries = sorted(_examples(data_dir / "sst2" / "test.jsonl", 40, rng), key=lambda e: len(e.fields["text"]))
    queries = [queries[0], queries[13], queries[26], queries[-1]]  # shortest to longest
    out = []
    for k in (0, 4):
        for q in queries:
            r = prompt.render(demos[:k], q)
            conts = SINGLE if k == 4 else MULTI
            out += [LoglikelihoodRequest(r.prefix, r.context, c) for c in conts]
    out.append(LoglikelihoodRequest(out[-1].prefix, "", " Review"))  # empty context: scored right after the prefix
    return out


def naive_logprob(lm: HFCausalLM, r: LoglikelihoodRequest) -> tuple[float, bool]:
    """Plain model(input_ids) on the concatenated ids, log_softmax, gather."""
    ctx = lm.request_ids(r.prefix, r.context)
    cont = lm.tokenize(r.continuation)
    with torch.inference_mode():
        logits = lm.model(torch.tensor([ctx + cont])).logits[0].float()
    lp = torch.log_softmax(logits[len(ctx) - 1:-1], dim=-1)
    target = torch.tensor(cont)
    return float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())


@pytest.fixture(scope="module")
def reference(smol, requests_):
    return [naive_logprob(smol, r) for r in requests_]


def _predictions(requests, logprobs):
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for r, lp in zip(requests, logprobs):
        key = (r.prefix, r.context)
        if key not in best or lp > best[key][0]:
            best[key] = (lp, r.continuation)
    return {k: v[1] for k, v in best.items()}


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_shared_prefix_matches_naive_fp32(smol, requests_, reference, batch_size):
    lm = HFCausalLM(smol.model, smol.tokenizer, batch_size=batch_size, share_prefix=True)
    got = lm.loglikelihood(requests_)
    ref_lp = [lp for lp, _ in reference]
    assert max(abs(g.logprob - r) for g, r in zip(got, ref_lp)) < 1e-4
    assert [g.greedy for g in got] == [greedy for _, greedy in reference]
    assert [g.n_tokens for g in got] == [len(smol.tokenize(r.continuation)) for r in requests_]
    assert _predictions(requests_, [g.logprob for g in got]) == _predictions(requests_, ref_lp)


def test_naive_path_and_input_order(smol, requests_, reference):
    naive = HFCausalLM(smol.model, smol.tokenizer, batch_size=7, share_prefix=False).loglikelihood(requests_)
    assert max(abs(g.logprob - r) for g, (r, _) in zip(naive, reference)) < 1e-4
    order = list(range(len(requests_)))
    random.Random(0).shuffle(order)
    shuffled = HFCausalLM(smol.model, smol.tokenizer, batch_size=7).loglikelihood([requests_[i] for i in order])
    for res, i in zip(shuffled, order):
        assert abs(res.logprob - reference[i][0]) < 1e-4


def test_shared_prefix_bf16(smol, requests_):
    model = copy.deepcopy(smol.model).to(torch.bfloat16)
    lm = HFCausalLM(model, smol.tokenizer, batch_size=7)
    small = requests_[-7:-1]  # the three longest k=4 queries, one-token labels
    got = lm.loglikelihood(small)
    ref = [naive_logprob(lm, r)[0] for r in small]
    diffs = [abs(g.logprob - r) for g, r in zip(got, ref)]
    # bf16 keeps 8 mantissa bits: a logit near 20 is rounded to a multiple of 0.125, and a different summation order
    # anywhere in 30 layers moves a log-prob by a few 1e-2 (the naive padded path's too). A wrong cache, position or
    # mask moves it by whole nats.
    assert max(diffs) < 0.15, diffs
    assert _predictions(small, [g.logprob for g in got]) == _predictions(small, ref)


def test_plan_one_row_per_query_for_one_token_labels():
    items = [([1, 2, 3], [4, 5], [7]), ([1, 2, 3], [4, 5], [8]), ([1, 2, 3], [6], [7]), ([], [9], [7, 8]),
             ([], [9], [7])]
    groups = plan(items)
    assert [g.shared for g in groups] == [(1, 2), ()]
    rows = {r.tokens: sorted(t.request for t in r.targets) for g in groups for r in g.rows}
    # one-token labels share the query's row; [7] after [9] is read from the [9, 7] row of the two-token label
    assert rows == {(3, 4, 5): [0, 1], (3, 6): [2], (9, 7): [3, 4]}
    row = next(r for g in groups for r in g.rows if r.tokens == (9, 7))
    assert {t.request: t.start for t in row.targets} == {3: 0, 4: 0} and row.keep == 2


def test_batches_are_length_bucketed_and_bounded():
    lengths = [5, 50, 7, 48, 6, 49]
    out = batches(lengths, max_rows=2, max_tokens=1000)
    assert out == [[1, 5], [3, 2], [4, 0]]
    # the padded width is the longest row's: a long row does not take short ones along past the token budget
    assert batches([5, 5, 5, 5, 50], max_rows=8, max_tokens=99) == [[4], [0, 1, 2, 3]]


def test_batches_cut_by_pass_cost_run_the_fewest_tokens_plus_passes():
    """With a per-pass cost, the cut of the sorted rows is the cheapest one (checked against every contiguous cut of
    random rows), within the row and token bounds; short rows leave long ones' batches only when that pays."""
    import itertools

    assert batches([10, 10, 2, 2], max_rows=4, max_tokens=1000, overhead=3) == [[0, 1], [2, 3]]  # 24 + 6 < 40 + 3
    assert batches([10, 10, 2, 2], max_rows=4, max_tokens=1000, overhead=100) == [[0, 1, 2, 3]]

    def cost(cut, widths):
        return sum(len(b) * widths[b[0]] + over for b in cut)

    rng = random.Random(3)
    for _ in range(200):
        n, rows, over = rng.randint(1, 8), rng.randint(1, 5), rng.choice([0, 5, 64])
        lengths = [rng.randint(1, 60) for _ in range(n)]
        budget = rng.choice([1000, 120])
        got = batches(lengths, max_rows=rows, max_tokens=budget, overhead=over)
        order = sorted(range(n), key=lambda i: (-lengths[i], i))
        assert [i for b in got for i in b] == order  # every row once, longest first
        ok = lambda b: len(b) <= rows and (len(b) == 1 or len(b) * lengths[b[0]] <= budget)  # noqa: E731
        assert all(ok(b) for b in got)
        every = ([order[a:z] for a, z in zip((0, *cuts), (*cuts, n))]
                 for k in range(n) for cuts in itertools.combinations(range(1, n), k))
        best = min(cost(c, lengths) for c in every if all(ok(b) for b in c))
        assert cost(got, lengths) == best


def test_prefixes_pack_within_rows_and_tokens():
    """Small prefix groups pack, longest prefix first, until a pack would pass the rows or the token bound; groups
    without a prefix or already a full batch go alone."""
    units = [(30, 4, 400), (50, 4, 400), (0, 2, 10), (40, 4, 400), (20, 8, 100), (10, 4, 400)]  # prefix, rows, tokens
    got = packs(units, 8, lambda u: u[0], lambda u: u[1])
    assert got == [[(0, 2, 10)], [(20, 8, 100)], [(50, 4, 400), (40, 4, 400)], [(30, 4, 400), (10, 4, 400)]]
    got = packs(units, 8, lambda u: u[0], lambda u: u[1], lambda u: u[2], 1000)
    assert got[2:] == [[(50, 4, 400), (40, 4, 400)], [(30, 4, 400), (10, 4, 400)]]
    got = packs(units, 8, lambda u: u[0], lambda u: u[1], lambda u: u[2], 700)  # two 400-token groups are too many
    assert got[2:] == [[(50, 4, 400)], [(40, 4, 400)], [(30, 4, 400)], [(10, 4, 400)]]


@pytest.fixture(scope="module")
def several_episodes(data_dir):
    """Three episodes' requests in one call: different demonstrations (prefix lengths 1, 2 and 4 shots), queries of
    mixed lengths, one-token labels for two episodes and multi-token labels for the third."""
    rng = random.Random(9)
    prompt = load_prompt("sentiment")
    demos = _examples(data_dir / "sst2" / "train.jsonl", 7, rng, max_chars=80)
    queries = _examples(data_dir / "sst2" / "test.jsonl", 9, rng, max_chars=200)
    out = []
    for e, (k, conts) in enumerate([(1, SINGLE), (2, MULTI), (4, SINGLE)]):
        shots = demos[sum((1, 2, 4)[:e]):][:k]
        for q in queries[3 * e:3 * e + 3]:
            r = prompt.render(shots, q)
            out += [LoglikelihoodRequest(r.prefix, r.context, c) for c in conts]
    return out


@pytest.mark.parametrize("batch_size", [4, 12, 64])
def test_prefixes_of_several_episodes_packed_in_one_batch_match_naive(smol, several_episodes, batch_size):
    lm = HFCausalLM(smol.model, smol.tokenizer, batch_size=batch_size)
    items = [(*lm.split(r.prefix, r.context), lm.tokenize(r.continuation)) for r in several_episodes]
    packs = lm._packs(plan(items))
    if batch_size >= 12:
        assert any(len(p) > 1 for p in packs)  # this call does pack prefixes of different lengths together
    got = lm.loglikelihood(several_episodes)
    ref = [naive_logprob(smol, r) for r in several_episodes]
    assert max(abs(g.logprob - r) for g, (r, _) in zip(got, ref)) < 1e-4
    assert [g.greedy for g in got] == [greedy for _, greedy in ref]
