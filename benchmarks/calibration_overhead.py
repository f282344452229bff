"""What calibration costs: LM scoring time of ICL with contextual + DC-PMI + batch calibration vs plain ICL.

Same model, same 8-shot SST-2 episodes, one process: both configurations score every episode, alternating, after a
warm-up pass, for ``--rounds`` rounds; the time is the wall time spent inside ``LM.loglikelihood`` (the queries'
scoring pass, plus for the calibrated run its few extra requests: 3 content-free inputs × 2 labels continuing the
episode's cached demonstrations, and 2 labels after the domain premise; batch calibration needs no request). The
calibrated run's raw predictions must equal plain ICL's (same scores). Prints a table, then, last,
``calibration_overhead=<median over rounds of calibrated / plain>``. Target on CPU: at most 1.15.

    python benchmarks/calibration_overhead.py --episodes 6 --rounds 3
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from _iclkit_core import ensure_importable, sst2_bench_args, sst2_episodes

ensure_importable()

from iclkit.learners.icl import ICL  # noqa: E402
from iclkit.lm import ModelSpec, load_lm  # noqa: E402
from iclkit.prompts import load_prompt  # noqa: E402

CALIBRATED = ("none", "contextual", "dcpmi", "batch")


class TimedLM:
    """The model behind the LM protocol, adding up the wall time and requests of its ``loglikelihood`` calls."""

    def __init__(self, lm: Any):
        self.lm, self.seconds, self.requests = lm, 0.0, 0

    def loglikelihood(self, requests: Sequence[Any]) -> list[Any]:
        start = time.perf_counter()
        out = self.lm.loglikelihood(requests)
        self.seconds += time.perf_counter() - start
        self.requests += len(requests)
        return out

    def tokenize(self, text: str) -> list[int]:
        return self.lm.tokenize(text)

    @property
    def device(self) -> str:
        return self.lm.device

    def describe(self) -> Any:
        return self.lm.describe()


def main() -> None:
    a = sst2_bench_args(__doc__.splitlines()[0], rounds=3)
    import torch

    lm = TimedLM(load_lm(ModelSpec(dtype="float32", device=a.device)))
    prompt = load_prompt("sentiment")
    episodes = sst2_episodes(a)
    learners = {"plain": ICL(lm=lm, prompt=prompt), "calibrated": ICL(lm=lm, prompt=prompt, calibrations=CALIBRATED)}
    inputs = [(ep.support, ep.labels, ep.query) for ep in episodes]
    for learner in learners.values():  # warm-up: allocator, tokenizer memo, first-call costs
        learner.predict_outputs(inputs[:1])
    seconds: dict[str, list[float]] = {name: [] for name in learners}
    requests: dict[str, int] = {}
    raw: dict[str, list[str]] = {}
    for _ in range(a.rounds):
        for name in seconds:
            seconds[name].append(0.0)
        for one in inputs:  # alternate per episode, so drift in machine speed hits both alike
            for name, learner in learners.items():
                lm.seconds, lm.requests = 0.0, 0
                out = learner.predict_outputs([one])[0]
                seconds[name][-1] += lm.seconds
                requests[name] = requests.get(name, 0) + lm.requests
                raw.setdefault(name, []).extend(p.predicted for p in out["icl"])
    ratios = [c / p for c, p in zip(seconds["calibrated"], seconds["plain"])]
    same = raw["plain"] == raw["calibrated"]
    per = {name: requests[name] // (a.rounds * len(inputs)) for name in requests}
    print(f"| config | requests/episode | LM seconds per round ({a.rounds} rounds, {len(inputs)} episodes) |")
    print("|---|---:|---|")
    for name in learners:
        print(f"| {name} | {per[name]} | {', '.join(f'{s:.2f}' for s in seconds[name])} |")
    print(f"raw predictions identical: {same}; device {lm.device}; {a.shots}-shot SST-2, {a.n_query} queries")
    if a.out:
        Path(a.out).write_text(json.dumps({"args": vars(a), "torch_threads": torch.get_num_threads(),
                                           "seconds": seconds, "requests_per_episode": per,
                                           "ratios": ratios, "identical_raw_predictions": same}, indent=2) + "\n")
    print(f"calibration_overhead={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
