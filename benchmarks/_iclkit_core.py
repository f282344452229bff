"""Lets the benchmarks import iclkit's LM and ICL modules on a machine that lacks the rest of iclkit's dependencies.

The lent GPU image has torch, transformers and accelerate but not necessarily scikit-learn, scipy or matplotlib,
which ``import iclkit`` pulls in through the runner. The modules the benchmarks use need only torch, transformers
and PyYAML; if the full import fails, ``iclkit`` is registered as a bare package so those modules still load.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ensure_importable() -> None:
    """Import iclkit, or register it as a bare package whose submodules import on demand."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        import iclkit  # noqa: F401
    except ImportError as e:
        pkg = types.ModuleType("iclkit")
        pkg.__path__ = [str(REPO / "iclkit")]
        sys.modules["iclkit"] = pkg
        print(f"note: `import iclkit` failed ({e}); using its LM modules only", file=sys.stderr)


def sst2_bench_args(description: str, *, rounds: int, **extra: dict) -> argparse.Namespace:
    """The options every SST-2 scoring benchmark takes (episodes, queries, shots, rounds, seed, device, threads,
    --out), plus ``extra`` (flag → add_argument keywords); applies --threads to torch."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--n-query", type=int, default=16)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=rounds)
    for flag, kwargs in extra.items():
        ap.add_argument(f"--{flag}", **kwargs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--out", help="also write the measurements as JSON here")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    return a


def sst2_episodes(a: argparse.Namespace) -> list:
    """The benchmark's SST-2 episodes: ``a.episodes`` × ``a.shots`` shots × ``a.n_query`` queries, seed ``a.seed``."""
    from iclkit.data.tasks import load_task
    from iclkit.episodes import EpisodeConfig, sample_episodes

    return sample_episodes(load_task("sst2"), EpisodeConfig(shots=(a.shots,), n_episodes=a.episodes,
                                                            n_query=a.n_query, seed=a.seed))


def report(lines: list[str], out: str | Path | None) -> None:
    """Print a benchmark's result lines and, with ``--out``, write the same lines to that file."""
    print("\n".join(lines))
    if out:
        Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
