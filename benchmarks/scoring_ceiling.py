"""How close iclkit's ICL scoring runs to this machine's ceiling for the model (issue 18 §3).

The ceiling: the model's own linear layers (every ``nn.Linear`` of its decoder: attention projections and MLP; the LM
head is left out, as iclkit computes logits only where a label is read) applied to one batch of ``--rows`` tokens,
timed layer by layer with their real weights. Tokens / (time of all of them) is the rate no scorer of this model can
beat on this machine in fp32 without skipping tokens: attention, norms, embeddings and the head only add to it.

In the same process, between two measurements of the ceiling (so that drift in machine speed shows): iclkit scores
the workload of ``icl_vs_lmeval.py`` (8-shot SST-2, one episode, the first ``--n-docs`` test rows as queries) and
its rate is taken over the tokens it forwards (the demonstrations once, each query once). A second, profiled run
of the same scoring splits its time by kind of operation: matrix products (the linear layers and the head on the
positions read), attention, copies (the cached prefix gathered per row, caches concatenated), the rest. Prints both
rates, the fraction, and what the ceiling implies for ``icl_vs_lmeval.py``'s end-to-end ratio: the scoring seconds
the tokens need at the ceiling. Last line: ``scoring_fraction_of_ceiling=<x>``.

    python benchmarks/scoring_ceiling.py --n-docs 200 --out benchmarks/results/scoring_ceiling_cpu.txt
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from _iclkit_core import ensure_importable, report
from icl_vs_lmeval import LABELS, TEMPLATE, naive_tokens, read_jsonl

ensure_importable()

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from iclkit.learners.icl import ICL  # noqa: E402
from iclkit.lm import ModelSpec, load_lm  # noqa: E402
from iclkit.lm.weights import resolve  # noqa: E402
from iclkit.paths import data_dir  # noqa: E402
from iclkit.prompts import PromptTemplate  # noqa: E402
from iclkit.types import Example  # noqa: E402


def decoder_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """Every linear layer of the model but its output head (the layers each token of a scored row runs through)."""
    head = model.get_output_embeddings()
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]


@torch.inference_mode()
def ceiling(linears: list[torch.nn.Linear], rows: int, repeats: int) -> tuple[float, float]:
    """(tokens/s, GFLOP/s) of the linear layers alone on a ``rows``-token batch: best of ``repeats`` timed passes."""
    g = torch.Generator().manual_seed(0)
    xs = {m.in_features: torch.randn(rows, m.in_features, generator=g, dtype=m.weight.dtype)
          for m in linears}
    flops = sum(2 * rows * m.in_features * m.out_features for m in linears)
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms caches and thread pools
        t = time.perf_counter()
        for m in linears:
            torch.nn.functional.linear(xs[m.in_features], m.weight, m.bias)
        best = min(best, time.perf_counter() - t)
    return rows / best, flops / best / 1e9


KINDS = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
         "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
                       "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention"),
         "copies and concatenation": ("aten::copy_", "aten::cat", "aten::index_select", "aten::index")}


def time_split(prof: Any) -> dict[str, float]:
    """Seconds of a profiled run by kind of operation (``KINDS``, then everything else torch ran)."""
    self_s = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    split = {kind: sum(self_s.get(op, 0.0) for op in ops) for kind, ops in KINDS.items()}
    split["other torch ops"] = sum(self_s.values()) - sum(split.values())
    return split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-docs", type=int, default=200)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--rows", type=int, default=512, help="tokens in the ceiling's batch (a CPU scoring batch "
                                                          "holds a few hundred)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", help="folder with train.jsonl/test.jsonl (default: <data folder>/sst2)")
    ap.add_argument("--out", help="also write the printed lines here")
    a = ap.parse_args()
    data = Path(a.data) if a.data else Path(data_dir()) / "sst2"
    spec = ModelSpec()
    lm = load_lm(spec)
    linears = decoder_linears(lm.model)
    a.model, a.data = str(resolve(spec)[0]), str(data)
    _, unique, _ = naive_tokens(a)  # the tokens iclkit forwards: the demonstrations once, each query once

    prompt = PromptTemplate(name="sst2", template=TEMPLATE, target=" {label}", separator="\n\n")
    demos = [Example(id=f"d{i}", fields={"text": r["text"]}, label=r["label"])
             for i, r in enumerate(read_jsonl(data / "train.jsonl", a.shots))]
    docs = [Example(id=str(i), fields={"text": r["text"]}, label=r["label"])
            for i, r in enumerate(read_jsonl(data / "test.jsonl", a.n_docs))]
    learner = ICL(lm=lm, prompt=prompt).adapt(demos, LABELS)
    learner.predict(docs[:4])  # warm-up: the scoring path's first call

    before = ceiling(linears, a.rows, a.repeats)
    t = time.perf_counter()
    learner.predict(docs)
    scoring = time.perf_counter() - t
    after = ceiling(linears, a.rows, a.repeats)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learner.predict(docs)
    split = time_split(prof)

    top = (before[0] + after[0]) / 2
    rate = unique / scoring
    lines = [
        f"model={lm.info.get('model')} dtype={lm.info.get('dtype')} threads={torch.get_num_threads()} "
        f"load={os.getloadavg()[0]:.2f} docs={a.n_docs} shots={a.shots} tokens_forwarded={unique} "
        f"linear_layers={len(linears)} ceiling_rows={a.rows}",
        f"ceiling before: {before[0]:,.0f} tok/s ({before[1]:.0f} GFLOP/s in the linear layers)",
        f"iclkit scoring: {scoring:.2f} s, {rate:,.0f} tok/s over the tokens it forwards",
        f"ceiling after:  {after[0]:,.0f} tok/s ({after[1]:.0f} GFLOP/s in the linear layers)",
        f"at the ceiling these tokens need {unique / top:.2f} s of scoring",
        "a second, profiled scoring run, seconds by kind of operation (self CPU time of torch's ops): "
        + ", ".join(f"{k} {v:.2f} ({v / sum(split.values()):.0%})" for k, v in split.items()),
        f"scoring_fraction_of_ceiling={rate / top:.3f}",
    ]
    report(lines, a.out)


if __name__ == "__main__":
    main()
