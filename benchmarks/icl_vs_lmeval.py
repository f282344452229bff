"""k-shot SST-2 scoring, side by side: lm-evaluation-harness vs a naive transformers loop vs iclkit.

Same model, same prompts: the first 8 SST-2 train rows as demonstrations for every doc (lm-eval's
``fewshot_config: {sampler: first_n}``, as the queries of one iclkit episode share their demonstrations), the first
``--n-docs`` test rows as queries, " negative" / " positive" scored after "Review: {text}\\nSentiment:". Each system
runs end to end in its own fresh Python process (imports, model loading and data preparation count), one after the
other in this one run. Prints a table and, last, ``speedup_vs_lmeval=<x> identical_predictions=<True|False>``.

The table also gives the tokens each system runs through the model and its scoring rate over them: lm-eval one
sequence per doc (its logits cache scores both one-token labels of a doc from one forward pass), the naive loop
one per doc and label, iclkit the demonstrations once and each query once. The ratio of those counts bounds the
scoring speedup at equal forward rates.

    pip install -e '.[bench]'           # or lm_eval in a folder of its own, given to the workers by PYTHONPATH
    python benchmarks/icl_vs_lmeval.py --n-docs 200
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _iclkit_core import REPO, ensure_importable

LABELS = ("negative", "positive")
TEMPLATE = "Review: {text}\nSentiment:"
TASK_YAML = """task: sst2_first_n
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
output_type: multiple_choice
training_split: train
fewshot_split: train
test_split: test
doc_to_text: "Review: {{{{text}}}}\\nSentiment:"
doc_to_choice: ["negative", "positive"]
doc_to_target: "{{{{['negative', 'positive'].index(label)}}}}"
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
fewshot_config:
  sampler: first_n
num_fewshot: {shots}
metric_list:
  - metric: acc
"""


def read_jsonl(path: Path, n: int) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(rows) == n:
                break
            rows.append(json.loads(line))
    return rows


def prompts(data: Path, n_docs: int, shots: int) -> tuple[str, list[str], list[dict]]:
    """The shared demonstration prefix, each doc's context, and the docs."""
    demos = read_jsonl(data / "train.jsonl", shots)
    docs = read_jsonl(data / "test.jsonl", n_docs)
    prefix = "".join(TEMPLATE.format(text=d["text"]) + " " + d["label"] + "\n\n" for d in demos)
    return prefix, [TEMPLATE.format(text=d["text"]) for d in docs], docs


# -- workers: each runs in a fresh process and prints one JSON line ---------------------------------------------------

def worker_lmeval(a: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.models.huggingface import HFLM

    loop = {"s": 0.0}
    scored = HFLM.loglikelihood

    def timed(self, *args, **kwargs):  # measures lm-eval's scoring loop; the work is lm-eval's own
        t = time.perf_counter()
        try:
            return scored(self, *args, **kwargs)
        finally:
            loop["s"] += time.perf_counter() - t

    HFLM.loglikelihood = timed
    work = Path(a.work)
    data = Path(a.data)
    # lm-eval gets a fewshot file holding exactly the demonstrations and a test file holding exactly the docs,
    # so it spends nothing on rows it would not use.
    for split, n in (("train", a.shots), ("test", a.n_docs)):
        with open(work / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in read_jsonl(data / f"{split}.jsonl", n):
                f.write(json.dumps(row) + "\n")
    tasks = work / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "sst2_first_n.yaml").write_text(TASK_YAML.format(train=work / "train.jsonl", test=work / "test.jsonl",
                                                              shots=a.shots))
    sys.argv = ["lm_eval", "run", "--model", "hf", "--model_args", f"pretrained={a.model},dtype={a.dtype}",
                "--tasks", "sst2_first_n", "--include_path", str(tasks), "--batch_size", str(a.lmeval_batch_size),
                "--device", a.device, "--limit", str(a.n_docs), "--output_path", str(work / "out"), "--log_samples"]
    try:
        cli_evaluate()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    samples = glob.glob(str(work / "out" / "**" / "samples_sst2_first_n_*.jsonl"), recursive=True)
    rows = sorted(read_jsonl(Path(samples[0]), 10**9), key=lambda s: s["doc_id"])
    scores = [[float(r[0]) for r in s["filtered_resps"]] for s in rows]
    return {"loop_s": loop["s"], "in_process_s": time.perf_counter() - t0, "scores": scores}


def worker_naive(a: argparse.Namespace) -> dict:
    """Textbook loop: one full forward pass per (doc, label), no cache, no batching."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = _device(a.device)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).to(device).eval()
    prefix, contexts, _ = prompts(Path(a.data), a.n_docs, a.shots)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    lead = tok("", add_special_tokens=True)["input_ids"]
    # iclkit's split: demonstrations / query (the "\n\n" before it goes with the query) / label, tokenized apart
    body = prefix.rstrip()
    t = time.perf_counter()
    scores = []
    with torch.inference_mode():
        for ctx in contexts:
            ids = lead + enc(body) + enc(prefix[len(body):] + ctx)
            row = []
            for label in LABELS:
                cont = enc(" " + label)
                logits = model(torch.tensor([ids + cont], device=device)).logits[0].float()
                lp = torch.log_softmax(logits[len(ids) - 1:-1], -1)
                row.append(float(lp.gather(-1, torch.tensor(cont, device=device)[:, None]).sum()))
            scores.append(row)
    _sync(device)
    return {"loop_s": time.perf_counter() - t, "scores": scores}


def worker_iclkit(a: argparse.Namespace) -> dict:
    """iclkit's ICL learner on one episode: the 8 demonstrations as support, the docs as queries."""
    t = time.perf_counter()
    ensure_importable()
    from iclkit.learners.icl import ICL
    from iclkit.lm import ModelSpec, load_lm
    from iclkit.prompts import PromptTemplate
    from iclkit.types import Example

    lm = load_lm(ModelSpec(name=a.model, dtype=a.dtype, device=a.device, batch_size=a.batch_size))
    prompt = PromptTemplate(name="sst2", template=TEMPLATE, target=" {label}", separator="\n\n")
    data = Path(a.data)
    demos = [Example(id=f"d{i}", fields={"text": r["text"]}, label=r["label"])
             for i, r in enumerate(read_jsonl(data / "train.jsonl", a.shots))]
    docs = [Example(id=str(i), fields={"text": r["text"]}, label=r["label"])
            for i, r in enumerate(read_jsonl(data / "test.jsonl", a.n_docs))]
    rendered = prompt.render(demos, docs[0], LABELS)
    assert rendered.prefix == prompts(data, 1, a.shots)[0]  # the same text lm-eval and the naive loop score
    t_loop = time.perf_counter()
    preds = ICL(lm=lm, prompt=prompt).adapt(demos, LABELS).predict(docs)
    _sync(lm.device)
    loop = time.perf_counter() - t_loop
    return {"loop_s": loop, "startup_s": t_loop - t, "scores": [[p.scores[lab] for lab in LABELS] for p in preds]}


def _device(name: str):
    import torch

    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


WORKERS = {"lmeval": worker_lmeval, "naive": worker_naive, "iclkit": worker_iclkit}


# -- driver -----------------------------------------------------------------------------------------------------------

def run_worker(name: str, a: argparse.Namespace, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--work", str(work), "--model", a.model, "--dtype", a.dtype,
           "--device", a.device, "--data", a.data, "--n-docs", str(a.n_docs), "--shots", str(a.shots),
           "--batch-size", str(a.batch_size), "--lmeval-batch-size", str(a.lmeval_batch_size)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"{name} failed (exit {proc.returncode})")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def naive_tokens(a: argparse.Namespace) -> tuple[int, int, int]:
    """Tokens of the full naive prompts (every doc × label), the unique tokens (prefix once + each query), and the
    tokens lm-eval runs through the model: one sequence per distinct (context + continuation less its last token),
    as its ``logits_cache`` groups one-token continuations of a context into one forward pass (lm_eval
    ``HFLM._loglikelihood_tokens``, ``group_by="contexts"``), so each doc's prompt once for one-token labels."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.model)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix, contexts, _ = prompts(Path(a.data), a.n_docs, a.shots)
    body = prefix.rstrip()
    p = len(tok("", add_special_tokens=True)["input_ids"]) + len(enc(body))
    q = [len(enc(prefix[len(body):] + c)) for c in contexts]
    full = sum(p + n + len(enc(" " + lab)) for n in q for lab in LABELS)
    unique = p + sum(n + 1 for n in q)
    groups = {tuple(enc(" " + lab))[:-1] for lab in LABELS}  # lm-eval's grouping key past the context
    lmeval = sum(p + n + len(key) for n in q for key in groups)
    return full, unique, lmeval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-docs", type=int, default=200)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--model", help="model folder (default: the embedded SmolLM2 as converted by iclkit)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", help="folder with train.jsonl/test.jsonl (default: ../shared/data/sst2)")
    ap.add_argument("--batch-size", type=int, default=0, help="iclkit rows per batch (0: automatic)")
    ap.add_argument("--lmeval-batch-size", default="8")
    ap.add_argument("--systems", default="lmeval,naive,iclkit", help="comma-separated subset to run")
    ap.add_argument("--json", help="also write the measurements here")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(WORKERS[a.worker](a)))
        return
    if a.model is None or a.data is None:
        ensure_importable()
    if a.model is None:
        from iclkit.lm.spec import ModelSpec
        from iclkit.lm.weights import resolve

        a.model = str(resolve(ModelSpec())[0])
    if a.data is None:
        from iclkit.paths import data_dir

        a.data = str(Path(data_dir()) / "sst2")
    systems = [s for s in a.systems.split(",") if s]
    full, unique, lmeval_tokens = naive_tokens(a)
    # tokens each system runs through the model (padding aside): its scoring seconds over these is its forward rate
    forwarded = {"lmeval": lmeval_tokens, "naive": full, "iclkit": unique}
    print(f"model={a.model} dtype={a.dtype} device={a.device} docs={a.n_docs} shots={a.shots} "
          f"naive_tokens={full} unique_tokens={unique} lmeval_forwarded_tokens={lmeval_tokens}", flush=True)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in systems:
            work = Path(tmp) / name
            work.mkdir()
            res[name] = run_worker(name, a, work)
            print(f"{name}: {res[name]['wall_s']:.1f} s end to end, {res[name]['loop_s']:.1f} s scoring", flush=True)
    ref = "lmeval" if "lmeval" in res else systems[0]
    preds = {n: [max(range(len(LABELS)), key=lambda j: s[j]) for s in r["scores"]] for n, r in res.items()}
    print(f"\n| system | wall s (end to end) | start-up s | scoring s | docs/s | effective tok/s | tokens forwarded "
          f"| forwarded tok/s (scoring) | speedup vs {ref} (wall) | speedup (scoring) | mismatches vs {ref} "
          f"| max |Δlogprob| |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, r in res.items():
        delta = max(abs(x - y) for s, t in zip(r["scores"], res[ref]["scores"]) for x, y in zip(s, t))
        mism = sum(p != q for p, q in zip(preds[n], preds[ref]))
        r["forwarded_tokens"] = forwarded[n]
        startup = f"{r['startup_s']:.1f}" if "startup_s" in r else "–"
        print(f"| {n} | {r['wall_s']:.1f} | {startup} | {r['loop_s']:.1f} | {a.n_docs / r['wall_s']:.1f} | "
              f"{full / r['wall_s']:.0f} | {forwarded[n]:,} | {forwarded[n] / r['loop_s']:.0f} | "
              f"{res[ref]['wall_s'] / r['wall_s']:.2f}× | {res[ref]['loop_s'] / r['loop_s']:.2f}× | {mism} | "
              f"{delta:.2e} |")
    identical = all(p == preds[ref] for p in preds.values())
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "naive_tokens": full, "unique_tokens": unique,
                                            "lmeval_forwarded_tokens": lmeval_tokens,
                                            "results": {n: {k: v for k, v in r.items() if k != "scores"}
                                                        for n, r in res.items()},
                                            "identical_predictions": identical}, indent=1))
    speedup = res[ref]["wall_s"] / res["iclkit"]["wall_s"] if "iclkit" in res else float("nan")
    print(f"\nspeedup_vs_lmeval={speedup:.2f} identical_predictions={identical}")


if __name__ == "__main__":
    main()
