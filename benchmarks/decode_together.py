"""Open-answer episodes decoded together against one at a time, same model, same episodes, one process.

A greedy decoding step reads every weight of the model whatever its row count, so on a CPU it is bound by memory:
the ICL learner hands the LM the episodes of one runner call together (``episode_batch``: 4 on a CPU) and their rows
decode in one batch (``greedy.decode_packed``). This runs the default run's three open-answer tasks (country-capital,
past-tense, nationality) at 0 and 4 shots through ``ICL.predict_outputs`` with ``episode_batch`` 1 and 4, the two
alternating for ``--rounds`` rounds, and prints the times per task and shot count, whether every answer is the same,
then, last, ``decode_together_speedup=<total one-at-a-time ÷ total together, median over rounds>``.

    python benchmarks/decode_together.py --episodes 8 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import time

from _iclkit_core import ensure_importable

ensure_importable()

import torch  # noqa: E402

from iclkit.data.tasks import load_task  # noqa: E402
from iclkit.episodes import EpisodeConfig, sample_episodes  # noqa: E402
from iclkit.learners.icl import ICL  # noqa: E402
from iclkit.lm import ModelSpec, load_lm  # noqa: E402
from iclkit.prompts import load_prompt  # noqa: E402

TASKS = ("country-capital", "past-tense", "nationality")


def run(learner: ICL, episodes: list) -> tuple[float, list[str]]:
    """Seconds and answers for ``episodes``, handed to the learner ``episodes_per_call()`` at a time."""
    per_call = learner.episodes_per_call()
    start = time.perf_counter()
    answers = []
    for i in range(0, len(episodes), per_call):
        chunk = [(ep.support, ep.labels, ep.query) for ep in episodes[i:i + per_call]]
        for out in learner.predict_outputs(chunk):
            answers += [p.predicted for p in next(iter(out.values()))]
    return time.perf_counter() - start, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=8, help="episodes per task and shot count")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    lm = load_lm(ModelSpec(dtype="float32", device="cpu"))
    work = []
    for name in TASKS:
        task = load_task(name)
        prompt = load_prompt(task.spec.prompt)
        for shots in (0, 4):
            eps = sample_episodes(task, EpisodeConfig(shots=(shots,), n_episodes=args.episodes))
            work.append((f"{name} {shots} shots", prompt, list(eps)))
    one = lambda p: ICL(lm=lm, prompt=p, episode_batch=1)  # noqa: E731
    four = lambda p: ICL(lm=lm, prompt=p, episode_batch=4)  # noqa: E731
    run(four(work[0][1]), work[0][2][:4])  # warm-up
    ratios = []
    for r in range(args.rounds):
        total_one = total_four = 0.0
        for label, prompt, eps in work:
            t1, a1 = run(one(prompt), eps)
            t4, a4 = run(four(prompt), eps)
            total_one, total_four = total_one + t1, total_four + t4
            print(f"round {r} {label}: one episode per call {t1:.2f} s, four {t4:.2f} s ({t1 / t4:.2f}×), "
                  f"same answers: {a1 == a4} ({sum(x == y for x, y in zip(a1, a4))}/{len(a1)})", flush=True)
        ratios.append(total_one / total_four)
        print(f"round {r} total: {total_one:.1f} s vs {total_four:.1f} s", flush=True)
    print(f"threads={torch.get_num_threads()}")
    print(f"decode_together_speedup={statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
