"""Which of an episode's support examples ICL puts in a query's prompt, and in what order.

Every method sees the same support set; this only chooses ICL's demonstrations from it.

- ``random``: the episode's own (seeded, shuffled) order, the same for every query: one shared prefix.
- ``interleaved``: round-robin by label (each label's examples in the episode's order), starting from a label that
  depends only on the query's text, so the last demonstration's label is not the same for every query (recency
  bias, Zhao et al. 2021). At most one prompt per label per episode.
- ``similar`` (KATE, Liu et al. 2022, "What Makes Good In-Context Examples for GPT-3?"): the support sorted by
  cosine similarity to the query, most similar last (nearest to the query); ``per_query = M`` keeps the M most
  similar. Class balance is not enforced: a query may see some labels several times and others never. Vectors come
  from the run's embedding cache (``--embed``), centred on the episode's support mean (LM hidden states share one
  large direction that would otherwise dominate every cosine).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from iclkit.types import Example, content_key, stable_hash

DemoChoice = Literal["random", "similar", "interleaved"]


def interleaved(support: Sequence[Example], labels: Sequence[str], query: Example) -> tuple[Example, ...]:
    """Round-robin by label, starting at a label chosen by a hash of the query's text."""
    by_label = {lab: [e for e in support if e.label == lab] for lab in labels}
    present = [lab for lab in labels if by_label[lab]]
    if not present:
        return tuple(support)
    start = int(stable_hash(list(content_key(query))), 16) % len(present)
    order = present[start:] + present[:start]
    out: list[Example] = []
    for r in range(max(len(v) for v in by_label.values())):
        out += [by_label[lab][r] for lab in order if r < len(by_label[lab])]
    return tuple(out)


def similar(support: Sequence[Example], support_vectors: torch.Tensor, query_vector: torch.Tensor,
            per_query: int = 0) -> tuple[Example, ...]:
    """KATE: the ``per_query`` (0: all) most similar support examples, least similar first, most similar last."""
    center = support_vectors.mean(0)
    s = torch.nn.functional.normalize(support_vectors - center, dim=-1)
    q = torch.nn.functional.normalize(query_vector - center, dim=-1)
    sims = (s @ q).tolist()
    # ties: the example later in the episode's order counts as more similar (a fixed, documented rule)
    ranked = sorted(range(len(support)), key=lambda i: (sims[i], i))
    keep = ranked[-per_query:] if per_query else ranked
    return tuple(support[i] for i in keep)
