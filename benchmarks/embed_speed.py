"""What embedding costs: ``LMEncoder(lm)(texts)`` tokens/s against a plain full-sequence forward of the same model.

Same model, same texts, one process. (a) embeds the texts with the LM's hidden states (``LMEncoder``: last layer,
mean-pooled); (b) runs the causal LM with its head over the same token rows as a scorer would, in length-sorted
right-padded batches of the model's batch size (``lm.model(input_ids, attention_mask, use_cache=False)``). Both run
once as a warm-up, then alternate for ``--rounds`` rounds, so drift in machine speed hits both alike. Tokens are the
real (unpadded) tokens of the rows. Prints both rates, texts/s and the thread count, then, last,
``embed_speed_ratio=<median over rounds of a ÷ b>``. Target: at least 0.8 (embedding needs no LM head, so it can
exceed 1).

Texts: the first ``--texts`` SST-2 train sentences from ``$ICLKIT_DATA_DIR/sst2``, else the built-in offline
movie-sentiment sentences (200).

    python benchmarks/embed_speed.py --texts 500 --rounds 3 --out benchmarks/results/embed_speed_cpu.txt
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Sequence

from _iclkit_core import ensure_importable, report

ensure_importable()

import torch  # noqa: E402

from iclkit.data.tasks import load_task  # noqa: E402
from iclkit.embeddings import LMEncoder  # noqa: E402
from iclkit.lm import ModelSpec, load_lm  # noqa: E402
from iclkit.paths import data_dir  # noqa: E402


def bench_texts(n: int) -> tuple[list[str], str]:
    """The first ``n`` SST-2 train texts when the data folder has them, else the offline movie-sentiment texts."""
    root = data_dir()
    if root is not None and (root / "sst2").is_dir():
        task, name = load_task("sst2"), "sst2 train"
        examples = task.train
    else:
        task, name = load_task("movie-sentiment"), "movie-sentiment (offline)"
        examples = task.train + task.test
    return [str(e.fields["text"]) for e in examples[:n]], name


def forward_all(lm: Any, rows: Sequence[Sequence[int]], batch_size: int) -> None:
    """The scorer's reference: full-sequence forwards with the LM head over length-sorted right-padded batches."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    device = lm.model.device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [rows[i] for i in order[start:start + batch_size]]
            ids = torch.full((len(batch), len(batch[0])), lm.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, s in enumerate(batch):
                ids[r, :len(s)] = torch.tensor(s, dtype=torch.long)
                mask[r, :len(s)] = 1
            lm.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--out", help="also write the printed lines here")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    lm = load_lm(ModelSpec(device=a.device))
    texts, source = bench_texts(a.texts)
    encoder = LMEncoder(lm)
    rows = [(lm.lead + lm.tokenize(t))[:encoder.max_tokens] or [lm.pad_id] for t in texts]  # what the encoder runs
    tokens = sum(len(r) for r in rows)
    encoder(texts[:16])  # warm-up: allocator, lazy hooks, first-call costs
    forward_all(lm, rows[:16], lm.batch_size)
    embed_s: list[float] = []
    forward_s: list[float] = []
    for _ in range(a.rounds):
        start = time.perf_counter()
        encoder(texts)
        embed_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        forward_all(lm, rows, lm.batch_size)
        forward_s.append(time.perf_counter() - start)
    ratio = statistics.median(f / e for e, f in zip(embed_s, forward_s))
    e, f = statistics.median(embed_s), statistics.median(forward_s)
    info = lm.describe()
    lines = [
        f"model={info.get('model')} dtype={info.get('dtype')} device={lm.device} threads={torch.get_num_threads()} "
        f"batch_size={lm.batch_size} torch={torch.__version__}",
        f"texts={len(texts)} ({source}) tokens={tokens} mean_tokens={tokens / len(texts):.1f} rounds={a.rounds}",
        f"embed:   {tokens / e:8.1f} tokens/s  {len(texts) / e:7.2f} texts/s  (median {e:.2f} s; "
        f"rounds {', '.join(f'{x:.2f}' for x in embed_s)})",
        f"forward: {tokens / f:8.1f} tokens/s  {len(texts) / f:7.2f} texts/s  (median {f:.2f} s; "
        f"rounds {', '.join(f'{x:.2f}' for x in forward_s)})",
        f"embed_speed_ratio={ratio:.3f}",
    ]
    report(lines, a.out)


if __name__ == "__main__":
    main()
