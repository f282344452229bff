"""GPU throughput of iclkit's prefix-shared scoring against raw forward passes of the same model, in one run.

Random-init models (no download): the SmolLM2-135M shape and a 1B Llama shape, bf16. Workload: 8-shot SST-2-style
episodes × 64 queries × 2 one-token labels. Reported per model:

- raw forward tok/s: plain batched ``model(input_ids)`` over the naive prompts (demonstrations + query + label,
  one sequence per query and label), the best a no-reuse evaluator can do per token;
- iclkit effective tok/s: naive-prompt tokens / iclkit's time for the same requests (what it replaces);
- iclkit unique tok/s: tokens iclkit actually has to run (each episode's prefix once + each query once) / its time.

iclkit is timed with ``--episodes-per-call`` episodes per LM call (the runner's GPU default, 16: queries of several
episodes share batches) and, for comparison, with one episode per call.

Needs only torch, transformers and a tokenizer folder (``--tokenizer``; default: the embedded SmolLM2's, converted
by iclkit). Runs on CPU too (``--smoke`` for a tiny check).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from _iclkit_core import ensure_importable

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True,
                         rope_theta=100000.0),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, tie_word_embeddings=True,
                     rope_theta=500000.0),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True),
}
LABELS = ("negative", "positive")


def random_model(shape: str, dtype: torch.dtype, device: str, seed: int = 0):
    """A LlamaForCausalLM of the given shape with seeded random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)  # weight init draws from the global generator; this script owns the process
    cfg = LlamaConfig(**SHAPES[shape], attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).to(dtype=dtype, device=device).eval()


def workload(data: Path | None, n_episodes: int, n_query: int, shots: int, seed: int):
    """Per episode: (demonstration prefix, query contexts). SST-2 rows if ``data`` is given, else seeded filler text."""
    rng = random.Random(seed)
    if data is not None and (data / "train.jsonl").is_file():
        train = [json.loads(x) for x in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
        test = [json.loads(x) for x in (data / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    else:
        words = "the a film movie plot actors great dull fun long boring moving story acting".split()
        fake = lambda: {"text": " ".join(rng.choice(words) for _ in range(rng.randint(8, 30))),  # noqa: E731
                        "label": rng.choice(LABELS)}
        train = [fake() for _ in range(200)]
        test = [fake() for _ in range(400)]
    eps = []
    for _ in range(n_episodes):
        demos = rng.sample(train, shots)
        prefix = "".join(f"Review: {d['text']}\nSentiment: {d['label']}\n\n" for d in demos)
        eps.append((prefix, [f"Review: {q['text']}\nSentiment:" for q in rng.sample(test, n_query)]))
    return eps


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def raw_forward(model, seqs: list[list[int]], batch: int, device: str, pad: int) -> float:
    """Seconds for plain batched forward passes over ``seqs`` (right-padded, logits of the last position only)."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            rows = [seqs[i] for i in order[s:s + batch]]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, :len(r)] = torch.tensor(r)
                mask[j, :len(r)] = 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False, logits_to_keep=1)
    sync(device)
    return time.perf_counter() - t


def bench(shape: str, a: argparse.Namespace, tok) -> dict:
    ensure_importable()
    from iclkit.lm.base import LoglikelihoodRequest
    from iclkit.lm.hf import HFCausalLM

    dtype = getattr(torch, a.dtype)
    model = random_model(shape, dtype, a.device)
    lm = HFCausalLM(model, tok, batch_size=a.batch_size, info={"dtype": a.dtype})
    eps = workload(Path(a.data) if a.data else None, a.episodes, a.queries, a.shots, a.seed)
    requests = [[LoglikelihoodRequest(p, q, " " + lab) for q in qs for lab in LABELS] for p, qs in eps]
    naive = [lm.request_ids(r.prefix, r.context) + lm.tokenize(r.continuation) for rs in requests for r in rs]
    n_naive = sum(len(s) for s in naive)
    n_unique = sum(len(lm.split(p, "")[0]) + sum(len(lm.split(p, q)[1]) + 1 for q in qs) for p, qs in eps)
    # warm-up: kernels and allocator (an out-of-memory back-off lasts one call: pass --batch-size where 512 rows do not fit)
    lm.loglikelihood(requests[0])
    lm.loglikelihood([r for rs in requests[:a.episodes_per_call] for r in rs])
    raw_forward(model, naive[:a.raw_batch], a.raw_batch, a.device, lm.pad_id)
    sync(a.device)
    t = time.perf_counter()
    for rs in requests:  # one LM call per episode
        lm.loglikelihood(rs)
    sync(a.device)
    t_one = time.perf_counter() - t
    per_call = a.episodes_per_call
    t = time.perf_counter()
    for s in range(0, len(requests), per_call):  # several episodes per call, as the runner does on a GPU
        lm.loglikelihood([r for rs in requests[s:s + per_call] for r in rs])
    sync(a.device)
    t_icl = time.perf_counter() - t
    t_raw = raw_forward(model, naive, a.raw_batch, a.device, lm.pad_id)
    out = {"model": shape, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
           "episodes": a.episodes, "queries": a.queries, "shots": a.shots, "naive_tokens": n_naive,
           "unique_tokens": n_unique, "iclkit_s": round(t_icl, 3), "raw_s": round(t_raw, 3),
           "raw_tok_s": round(n_naive / t_raw), "iclkit_effective_tok_s": round(n_naive / t_icl),
           "iclkit_unique_tok_s": round(n_unique / t_icl), "effective_vs_raw": round(t_raw / t_icl, 2),
           "unique_vs_raw": round((n_unique / t_icl) / (n_naive / t_raw), 3), "iclkit_batch_size": lm.batch_size,
           "episodes_per_call": per_call, "one_episode_per_call_s": round(t_one, 3),
           "effective_vs_raw_one_per_call": round(t_raw / t_one, 2)}
    del model, lm
    if a.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,llama-1b")
    ap.add_argument("--tokenizer", help="tokenizer folder (default: the embedded SmolLM2's)")
    ap.add_argument("--data", help="folder with SST-2 train.jsonl/test.jsonl (default: seeded filler text)")
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=0, help="iclkit rows per batch (0: automatic)")
    ap.add_argument("--raw-batch", type=int, default=64, help="sequences per raw forward pass")
    ap.add_argument("--episodes-per-call", type=int, default=16,
                    help="episodes per iclkit LM call (the runner's GPU default); also timed at 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    from transformers import AutoTokenizer

    if a.tokenizer is None:
        ensure_importable()
        from iclkit.lm.spec import ModelSpec
        from iclkit.lm.weights import resolve

        a.tokenizer = str(resolve(ModelSpec())[0])
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    device_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"device={device_name} torch={torch.__version__} dtype={a.dtype} episodes={a.episodes} "
          f"queries={a.queries} shots={a.shots}", flush=True)
    rows = [bench(m, a, tok) for m in a.models.split(",")]
    cols = ["model", "params_M", "naive_tokens", "unique_tokens", "raw_tok_s", "iclkit_effective_tok_s",
            "iclkit_unique_tok_s", "effective_vs_raw", "unique_vs_raw", "iclkit_batch_size", "episodes_per_call",
            "effective_vs_raw_one_per_call"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"device": device_name, "args": vars(a), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
