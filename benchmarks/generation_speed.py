"""What open-answer ICL costs: prefix-shared greedy decoding (``iclkit.lm.greedy``) against ``transformers``'
``generate`` on the same full prompts, same model, same requests, one process.

Requests: the default run's three open-answer tasks (country-capital, past-tense, nationality), the default episodes
(``--episodes``, 12 by default, × 16 queries) at 0, 1 and 4 shots, as ICL sends them (one call per task and shot count). Both paths run once as
a warm-up on the first task, then alternate for ``--rounds`` rounds, so drift in machine speed hits both alike.
Prints both times, whether every text is identical, the thread count, then, last,
``generation_speedup=<median over rounds of full ÷ shared>``.

    python benchmarks/generation_speed.py --rounds 3 --out benchmarks/results/generation_speed_cpu.txt
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _iclkit_core import ensure_importable

ensure_importable()

import torch  # noqa: E402

from iclkit.data.tasks import load_task  # noqa: E402
from iclkit.episodes import EpisodeConfig, sample_episodes  # noqa: E402
from iclkit.lm import GenerationRequest, ModelSpec, load_lm  # noqa: E402
from iclkit.lm.hf import HFCausalLM  # noqa: E402
from iclkit.prompts import load_prompt  # noqa: E402

TASKS = ("country-capital", "past-tense", "nationality")


def calls(n_episodes: int) -> list[list[GenerationRequest]]:
    """One list of requests per task × shot count, as the runner sends them."""
    out = []
    for name in TASKS:
        task = load_task(name)
        prompt = load_prompt(task.spec.prompt)
        episodes = sample_episodes(task, EpisodeConfig(n_episodes=n_episodes))  # the default run's: 12
        for shots in sorted({ep.shots for ep in episodes}):
            rendered = [prompt.render(ep.support, q) for ep in episodes if ep.shots == shots for q in ep.query]
            out.append([GenerationRequest(r.prefix, r.context, 8, prompt.stop) for r in rendered])
    return out


def timed(lm: HFCausalLM, work: list[list[GenerationRequest]]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    texts = [t for reqs in work for t in lm.generate(reqs)]
    return time.perf_counter() - start, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=12, help="episodes per task and shot count (default run: 12)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    base = load_lm(ModelSpec(dtype="float32", device="cpu"))
    shared = HFCausalLM(base.model, base.tokenizer, info=base.describe())
    full = HFCausalLM(base.model, base.tokenizer, share_prefix=False, info=base.describe())
    work = calls(args.episodes)
    n = sum(len(w) for w in work)
    timed(shared, work[:1]), timed(full, work[:1])  # warm-up
    ratios, lines = [], []
    for r in range(args.rounds):
        t_full, want = timed(full, work)
        t_shared, got = timed(shared, work)
        ratios.append(t_full / t_shared)
        lines.append(f"round {r}: transformers generate {t_full:.1f} s, prefix-shared {t_shared:.1f} s "
                     f"({n} requests), identical texts: {got == want} "
                     f"({sum(a == b for a, b in zip(got, want))}/{n})")
        print(lines[-1], flush=True)
    lines += [f"threads={torch.get_num_threads()}", f"generation_speedup={statistics.median(ratios):.2f}"]
    print("\n".join(lines[-2:]))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
