"""What ``--orders 4`` costs: wall time of ICL scoring under 4 demonstration orders relative to the drawn order alone.

Same model, same 8-shot SST-2 episodes, one process: after a warm-up pass, each round scores every episode once as
drawn (1 order) and once under its drawn order plus 3 seeded permutations (``iclkit.probes.permute_support``, as the
runner does for ``--orders 4``), alternating per episode so drift in machine speed hits both alike. Each permutation
is its own prompt prefix (shared by the episode's queries), so 4 orders cost at most about 4 times one order.
Prints a table, then, last, ``orders_cost=<median over rounds of 4-order / 1-order time>``. Target on CPU: ≤ 4.2.

    python benchmarks/orders_cost.py --episodes 6 --rounds 2
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from _iclkit_core import ensure_importable, sst2_bench_args, sst2_episodes

ensure_importable()

from iclkit.learners.icl import ICL  # noqa: E402
from iclkit.lm import ModelSpec, load_lm  # noqa: E402
from iclkit.probes import permute_support  # noqa: E402
from iclkit.prompts import load_prompt  # noqa: E402


def main() -> None:
    a = sst2_bench_args(__doc__.splitlines()[0], rounds=2, orders={"type": int, "default": 4})
    import torch

    learner = ICL(lm=load_lm(ModelSpec(dtype="float32", device=a.device)), prompt=load_prompt("sentiment"))
    episodes = sst2_episodes(a)
    versions = {ep.id: permute_support(ep, a.orders, a.seed) for ep in episodes}
    learner.predict_outputs([(episodes[0].support, episodes[0].labels, episodes[0].query)])  # warm-up
    seconds: dict[str, list[float]] = {"1 order": [], f"{a.orders} orders": []}
    for _ in range(a.rounds):
        for name in seconds:
            seconds[name].append(0.0)
        for ep in episodes:
            for name, eps in (("1 order", versions[ep.id][:1]), (f"{a.orders} orders", versions[ep.id])):
                start = time.perf_counter()
                for one in eps:  # one scoring pass per permutation: its own prefix, shared by its queries
                    learner.predict_outputs([(one.support, one.labels, one.query)])
                seconds[name][-1] += time.perf_counter() - start
    ratios = [m / o for m, o in zip(seconds[f"{a.orders} orders"], seconds["1 order"])]
    print(f"| config | seconds per round ({a.rounds} rounds, {len(episodes)} episodes) |")
    print("|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {', '.join(f'{x:.2f}' for x in s)} |")
    print(f"{a.shots}-shot SST-2, {a.n_query} queries per episode, device {a.device}, "
          f"torch threads {torch.get_num_threads()}")
    if a.out:
        Path(a.out).write_text(json.dumps({"args": vars(a), "torch_threads": torch.get_num_threads(),
                                           "seconds": seconds, "ratios": ratios}, indent=2) + "\n")
    print(f"orders_cost={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
