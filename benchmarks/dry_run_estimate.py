"""How close `iclkit run --dry-run`'s estimated wall time comes to the real run (issue 19 §2).

For three runs of different sizes, in one go on one machine: the dry run (its estimate, and the model loading and
planning time it reports but leaves out), then the same command without ``--dry-run``, timed end to end in its own
process. Prints one Markdown row per run; the estimate is of the LM scoring, generation and embedding the run does,
so the real run's wall also holds model loading, planning, meta-training and writing.

    python benchmarks/dry_run_estimate.py            # needs the benchmark data folder ($ICLKIT_DATA_DIR)
    python benchmarks/dry_run_estimate.py large      # only the named runs
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

RUNS = {
    "small": "--task sst2 --prompt sentiment --methods icl --shots 4 --episodes 5 --n-query 16",
    "medium": "--task sst2 --methods icl,protonet,knn --shots 0,4 --episodes 12 --n-query 16",
    "large": "--task agnews --prompt agnews --methods icl,protonet --shots 8 --episodes 6 --n-query 16",
}
UNIT = {"h": 3600, "min": 60, "s": 1}


def seconds(text: str) -> float:
    """``2 h 5 min`` / ``3 min 20 s`` / ``45 s`` / ``0.4 s`` in seconds."""
    return sum(float(n) * UNIT[u] for n, u in re.findall(r"([\d.]+) (h|min|s)\b", text))


def main() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    print(f"load before: {os.getloadavg()[0]:.2f}, cores: {os.cpu_count()}")
    print("| run | command options | estimate (scoring, embedding) | + load and planning | real wall | real / estimate |")
    print("|---|---|---:|---:|---:|---:|")
    for name, options in RUNS.items():
        if sys.argv[1:] and name not in sys.argv[1:]:
            continue
        base = ["iclkit", "run", *options.split(), "--seed", "0", "--no-progress"]
        dry = subprocess.run([*base, "--dry-run"], env=env, capture_output=True, text=True)
        if dry.returncode:
            sys.exit(f"{name}: dry run failed\n{dry.stderr[-2000:]}")
        est = seconds(re.search(r"^Estimated wall time.*?: ~(.*)$", dry.stdout, re.M).group(1))
        left = re.search(r"^- not included: (.*)$", dry.stdout, re.M).group(1)
        extra = sum(seconds(m) for m in re.findall(r"\(([^()]*?) here\)", left))
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            real = subprocess.run([*base, "--out", f"{out}/run"], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
        if real.returncode:
            sys.exit(f"{name}: run failed\n{real.stderr[-2000:]}")
        print(f"| {name} | `{options}` | {est:.0f} s | {est + extra:.0f} s | {wall:.0f} s | "
              f"{wall / (est + extra):.2f} |", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
