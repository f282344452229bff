"""Which demonstrations ICL shows each query: KATE ordering against a brute-force reference, round-robin
interleaving, every prompt drawn from the episode's own support, and each text embedded once."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from iclkit.embeddings import EmbeddingCache, LMEncoder, text_of
from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.data.tasks import load_task
from iclkit.learners.demos import interleaved, similar
from iclkit.learners.icl import ICL, CachedEmbed
from iclkit.prompts import load_prompt
from iclkit.types import Example


def _support(labels: list[str], per_label: int, seed: int) -> list[Example]:
    items = [Example(f"{lab}{i}", {"text": f"text {lab} {i}"}, lab) for lab in labels for i in range(per_label)]
    random.Random(seed).shuffle(items)
    return items


@pytest.mark.parametrize("seed", range(10))
def test_similar_matches_a_brute_force_ranking(seed: int):
    rng = np.random.default_rng(seed)
    support = _support(["a", "b", "c"], 3, seed)
    vecs = torch.tensor(rng.normal(size=(len(support), 8)), dtype=torch.float32)
    query = torch.tensor(rng.normal(size=8), dtype=torch.float32)
    # reference: cosine similarity after centring on the support mean, by plain numpy loops
    v = vecs.numpy().astype(float)
    c = v.mean(0)
    q = query.numpy().astype(float) - c
    sims = [float(np.dot(x - c, q) / (np.linalg.norm(x - c) * np.linalg.norm(q))) for x in v]
    ascending = [support[i] for i in sorted(range(len(support)), key=lambda i: sims[i])]
    assert list(similar(support, vecs, query)) == ascending  # most similar last, next to the query
    for m in (1, 4, len(support)):
        assert list(similar(support, vecs, query, m)) == ascending[-m:]


def test_interleaved_is_round_robin_and_varies_the_last_label():
    labels = ["a", "b", "c"]
    support = _support(labels, 3, 0)
    lasts = Counter()
    for i in range(30):
        query = Example(f"q{i}", {"text": f"query number {i}"}, "a")
        demos = interleaved(support, labels, query)
        assert Counter(demos) == Counter(support)  # the same support set, reordered
        order = [d.label for d in demos]
        start = labels.index(order[0])
        assert order == [labels[(start + j) % 3] for j in range(9)]  # one of each label per round
        for lab in labels:  # within a label, the episode's own order
            assert [d for d in demos if d.label == lab] == [d for d in support if d.label == lab]
        lasts[order[-1]] += 1
        assert interleaved(support, labels, query) == demos  # depends only on the query's text
    assert len(lasts) == 3, lasts


def test_unbalanced_support_keeps_every_example():
    support = _support(["a"], 3, 1) + _support(["b"], 1, 1)
    demos = interleaved(support, ["a", "b"], Example("q", {"text": "x"}, "a"))
    assert Counter(demos) == Counter(support) and [d.label for d in demos][-2:] == ["a", "a"]


def test_similar_demos_in_a_real_prompt(smol, data_dir, tmp_path, counting_lm):
    """ICL with demos='similar' on real sst2: each query's prompt shows its M most similar support examples, most
    similar last; every text is embedded once (a second pass costs no encoder call); extra prefix tokens are
    reported."""
    task = load_task("sst2")
    ep = sample_episodes(task, EpisodeConfig(shots=(2,), n_episodes=1, n_query=4, seed=2))[0]
    cache = EmbeddingCache(LMEncoder(smol), root=tmp_path, progress=False)
    lm = counting_lm(smol)
    icl = ICL(lm=lm, prompt=load_prompt("sentiment"), demos="similar", demos_per_query=3, embed=CachedEmbed(cache))
    preds = icl.adapt(ep.support, ep.labels).predict(ep.query)
    distinct = {text_of(e) for e in (*ep.support, *ep.query)}
    assert cache.calls == len(distinct)
    icl.adapt(ep.support, ep.labels).predict(ep.query)
    assert cache.calls == len(distinct)  # nothing embedded twice
    vecs = cache.embed([text_of(e) for e in ep.support])
    prompt = load_prompt("sentiment")
    for q in ep.query:
        want = similar(ep.support, vecs, cache.embed([text_of(q)])[0], 3)
        prefix = prompt.render(want, q, ep.labels).prefix
        assert any(r.prefix == prefix and r.context == prompt.example(q) for r in lm.requests)
        assert prefix.count("Review:") == 3 and prefix.rstrip().endswith(prompt.answer(want[-1].label).strip())
    assert all(p.extra["extra_prompt_tokens"] > 0 for p in preds)
